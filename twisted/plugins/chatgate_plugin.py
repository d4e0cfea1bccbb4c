"""The ``twistd chatgate`` plugin.

This module is imported whenever Twisted scans its plugins (any ``twistd
--help``), so it imports nothing of chatgate until the service is made.

Deliberately there is no ``twisted/plugins/__init__.py``: Twisted's own
``twisted.plugins`` package extends its path with every ``twisted/plugins``
folder found on ``sys.path``, and an ``__init__.py`` here would shadow it.
"""

from twisted.application.service import IServiceMaker
from twisted.plugin import IPlugin
from twisted.python import usage
from zope.interface import implementer


class Options(usage.Options):
    synopsis = "[--config tap-config.ini]"
    optParameters = [
        ["config", "c", "tap-config.ini", "The configuration file (every key is documented in it)."],
    ]


@implementer(IServiceMaker, IPlugin)
class ChatgateServiceMaker:
    tapname = "chatgate"
    description = "XMPP chat server for the users of webmail domains (see tap-config.ini)."
    options = Options

    def makeService(self, options: Options):
        from chatgate.service import makeService

        return makeService(options["config"])


serviceMaker = ChatgateServiceMaker()
