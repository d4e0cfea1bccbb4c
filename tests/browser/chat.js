// A very small chat client on Strophe.js, for the browser test: the test drives
// it through window.chat and reads back what it saw. It talks BOSH
// (XEP-0124/0206) to chatgate, from another origin than the page's (CORS).
(function () {
    "use strict";
    // The UMD build sets the globals Strophe (the namespace), $iq, $msg and $pres.
    const Strophe = window.Strophe.Connection ? window.Strophe : window.Strophe.Strophe;
    const { $iq, $msg, $pres } = window;
    const statusNames = Object.fromEntries(Object.entries(Strophe.Status).map(([name, value]) => [value, name]));
    const chat = { jid: null, status: [], roster: [], presences: [], messages: [] };
    let connection = null;

    function show(line) {
        const item = document.createElement("li");
        item.textContent = line;
        document.getElementById("log").appendChild(item);
    }

    function onRoster(iq) {
        for (const item of iq.getElementsByTagName("item")) {
            chat.roster.push({ jid: item.getAttribute("jid"), name: item.getAttribute("name") });
        }
        show("roster: " + chat.roster.map((r) => r.name).join(", "));
        connection.send($pres());
    }

    function onPresence(presence) {
        const entry = {
            from: presence.getAttribute("from"),
            type: presence.getAttribute("type"),
            show: presence.getElementsByTagName("show")[0]?.textContent || null,
        };
        chat.presences.push(entry);
        show(`presence ${entry.from} ${entry.type || "available"} ${entry.show || ""}`);
        return true;
    }

    function onMessage(message) {
        const body = message.getElementsByTagName("body")[0];
        if (body) {
            chat.messages.push({ from: message.getAttribute("from"), body: body.textContent });
            show(`${message.getAttribute("from")}: ${body.textContent}`);
        }
        return true;
    }

    chat.connect = function (service, jid, password) {
        connection = new Strophe.Connection(service);
        connection.connect(jid, password, (status, condition) => {
            chat.status.push([statusNames[status], condition || null]);
            show(`status ${statusNames[status]} ${condition || ""}`);
            if (status === Strophe.Status.CONNECTED) {
                chat.jid = connection.jid;
                connection.addHandler(onMessage, null, "message", "chat");
                connection.addHandler(onPresence, null, "presence");
                connection.sendIQ($iq({ type: "get" }).c("query", { xmlns: Strophe.NS.ROSTER }), onRoster);
            }
        });
    };
    chat.send = (to, text) => connection.send($msg({ to: to, type: "chat" }).c("body").t(text));
    chat.setShow = (value) => connection.send($pres().c("show").t(value));
    chat.disconnect = () => connection.disconnect("done");

    window.chat = chat;
})();
