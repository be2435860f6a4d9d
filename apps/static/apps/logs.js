// The Logs page's live tail: while "live tail" is ticked, the page reads GET /api/apps/<name>/logs (with the page's
// filters) every few seconds and redraws its table. Only text is written into the page (textContent), never HTML.
(function () {
    "use strict";
    var EVERY = 2000;
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
        var timer = null;
        function poll() {
            var query = new URLSearchParams();
            new FormData(form).forEach(function (value, key) { if (value) { query.append(key, value); } });
            fetch(live.dataset.api + "?" + query.toString(), {credentials: "same-origin", headers: {Accept: "application/json"}})
                .then(function (response) { return response.ok ? response.json() : null; })
                .then(function (data) { if (data && live.checked) { draw(table.tBodies[0], data.entries); } })
                .catch(function () {});
        }
        live.addEventListener("change", function () {
            if (timer) { clearInterval(timer); timer = null; }
            if (live.checked) { poll(); timer = setInterval(poll, EVERY); }
        });
    });
}());
