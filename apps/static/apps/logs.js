// The Logs page's live tail: while "live tail" is ticked, the page listens on the events socket (/ws/events/) and,
// when requests of its application were recorded ({"type": "log", "app"}), reads GET /api/apps/<name>/logs with
// the page's filters (at most once a second) and redraws its table. The event is only a hint: what is shown comes
// from the API, which skips entries that do not verify. Only text is written into the page, never HTML.
(function () {
    "use strict";
    var AT_MOST_EVERY = 1000, RETRY = 2000;
    function cell(row, text, className) {
        var td = document.createElement("td");
        td.textContent = text;
        if (className) { td.className = className; td.title = text; }
        row.appendChild(td);
        return td;
    }
    function draw(body, entries) {
        while (body.firstChild) { body.removeChild(body.firstChild); }
        entries.forEach(function (entry) {
            var row = document.createElement("tr");
            row.className = "appsup-log-" + String(entry.status).charAt(0) + "xx";
            cell(row, entry.at); cell(row, entry.environment); cell(row, entry.method);
            cell(row, entry.path, "appsup-log-path"); cell(row, String(entry.status)); cell(row, String(entry.ms));
            var error = cell(row, "");
            if (entry.error) {
                var span = document.createElement("span");
                span.className = "appsup-error";
                span.textContent = entry.error.type + ": " + entry.error.message;
                error.appendChild(span);
                if (entry.error.traceback) {
                    var details = document.createElement("details"), summary = document.createElement("summary");
                    var pre = document.createElement("pre");
                    details.className = "appsup-traceback";
                    summary.textContent = "traceback";
                    pre.textContent = entry.error.traceback;
                    details.appendChild(summary); details.appendChild(pre); error.appendChild(details);
                }
            }
            body.appendChild(row);
        });
    }
    document.addEventListener("DOMContentLoaded", function () {
        var live = document.getElementById("appsup-logs-live"), form = document.getElementById("appsup-logs-filters");
        var table = document.getElementById("appsup-logs");
        if (!live || !form || !table) { return; }
        var socket = null, lastRead = 0, pending = null;
        function read() {
            pending = null;
            lastRead = Date.now();
            var query = new URLSearchParams();
            new FormData(form).forEach(function (value, key) { if (value) { query.append(key, value); } });
            fetch(live.dataset.api + "?" + query.toString(), {credentials: "same-origin", headers: {Accept: "application/json"}})
                .then(function (response) { return response.ok ? response.json() : null; })
                .then(function (data) { if (data && live.checked) { draw(table.tBodies[0], data.entries); } })
                .catch(function () {});
        }
        function soon() {
            if (!pending) { pending = setTimeout(read, Math.max(0, lastRead + AT_MOST_EVERY - Date.now())); }
        }
        function connect() {
            if (!live.checked) { return; }
            var scheme = location.protocol === "https:" ? "wss://" : "ws://";
            socket = new WebSocket(scheme + location.host + "/ws/events/");
            socket.onmessage = function (message) {
                var event;
                try { event = JSON.parse(message.data); } catch (e) { return; }
                if ((event.type === "log" && event.app === live.dataset.app) ||
                        (event.type === "stream" && event.status === "live")) {  // (re)connected: may have missed some
                    soon();
                }
            };
            socket.onclose = function () { socket = null; setTimeout(connect, RETRY); };
        }
        live.addEventListener("change", function () {
            if (live.checked) {
                if (!socket) { connect(); }
            } else if (socket) {
                socket.onclose = null;
                socket.close();
                socket = null;
            }
        });
    });
}());
