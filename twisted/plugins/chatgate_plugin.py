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

    def postOptions(self) -> None:
        """twistd starts its log before the service is made: ``[log]`` is read now, and
        chatgate's observer (chatgate/logs.py) writes twistd's log file, so the level
        filters (and SIGHUP changes it) whatever the format."""
        twistd = getattr(self, "parent", None)
        if twistd is None or twistd.get("logger") or twistd.get("syslog"):
            return  # not under twistd, or an observer (or syslog) named on the command line wins
        from chatgate.config import ConfigError, load

        try:
            log = load(self["config"]).log
        except ConfigError:
            return  # makeService says what is wrong, in one line
        from chatgate import logs

        logfile = twistd.get("logfile") or (None if twistd.get("nodaemon") else "twistd.log")
        logs.chosen = (log.format, log.level, logfile)
        twistd["logger"] = "chatgate.logs.twistd_observer"  # twistd takes a name, and imports it


@implementer(IServiceMaker, IPlugin)
class ChatgateServiceMaker:
    tapname = "chatgate"
    description = "XMPP chat server for the users of webmail domains (see tap-config.ini)."
    options = Options

    def makeService(self, options: Options):
        from chatgate.service import makeService

        return makeService(options["config"])


serviceMaker = ChatgateServiceMaker()
