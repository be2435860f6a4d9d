/*
 * Live updates of the supervisor's admin pages, without a reload.
 *
 * Listens on the events socket (/ws/events/, see live/stream.py) and keeps current what the server marked:
 *   [data-live-placement="<app>:<environment>"]  data-state, its [data-live-badge] and its "Open" link (a[data-open]);
 *                                                 data-environment-status: running there shows "degraded", unopenable
 *   [data-live-environment="<name>"]             data-status and its [data-live-badge]
 *   time[data-live-time]                         the relative time in its [data-ago], every second
 *   [data-live-fragment="<key>"]                 replaced by the same fragment of a fresh copy of this page, read
 *                                                 from the server shortly after a change (errors, drift, times)
 * and shows how the stream is in #live-status (data-state: connecting, live, stale (live, but no controller keeps the
 * state up to date: the title says what to do), reconnecting, refused).
 *
 * What arrives is data, never markup: it is only compared with known states and written with textContent and
 * attributes. The markup that replaces fragments is the server's own page.
 */
(function () {
    "use strict";

    var SOCKET_PATH = "/ws/events/";
    var STATES = ["starting", "running", "stopping", "stopped", "error", "unknown"];
    var STATUSES = ["online", "degraded", "offline"];
    var RETRY_FIRST = 500, RETRY_CAP = 10000, REFUSED_RETRY = 30000;  // ms
    // After a placement event, re-read the page once the controller (a pass every 0.5 s) has mirrored it.
    var SETTLE = 1200;
    var SOON = 200;
    // Level-triggered safety net: whatever no event announced (a heartbeat, a lost event) shows within this.
    var RESYNC = 20000;
    var UNITS = [[86400, "d"], [3600, "h"], [60, "min"], [1, "s"]];
    var MARKED = "[data-live-fragment], [data-live-placement], [data-live-environment], time[data-live-time]";

    var skew = 0;  // the server's clock minus this browser's, in ms
    var latest = {};
    var supervisorWarning = "";  // placement key -> its last event, applied again over a fragment the server had not updated yet
    var indicator = null, changedNotice = null;
    var retry = RETRY_FIRST, state = "connecting", everLive = false, loadedAt = Date.now();
    var refreshTimer = null, refreshDue = 0, refreshing = false, again = false;

    function quoted(value) {
        return '"' + String(value).replace(/["\\]/g, "\\$&") + '"';
    }

    // ISO 8601 as the server writes it; microseconds cut to the milliseconds every browser parses.
    function parseTime(text) {
        return Date.parse(String(text || "").replace(/(\.\d{3})\d+/, "$1"));
    }

    function each(selector, fn) {
        Array.prototype.forEach.call(document.querySelectorAll(selector), fn);
    }

    // -- how the stream is ------------------------------------------------------------------------------------

    function setState(next, text, title) {
        state = next;
        if (!indicator) {
            return;
        }
        indicator.setAttribute("data-state", next);
        indicator.textContent = text;
        indicator.title = title || "";
    }

    function makeIndicator() {
        indicator = document.createElement("span");
        indicator.id = "live-status";
        indicator.setAttribute("role", "status");
        indicator.setAttribute("aria-live", "polite");
        var tools = document.getElementById("user-tools");
        if (tools) {
            tools.insertBefore(indicator, tools.firstChild);
        } else {
            (document.getElementById("header") || document.body).appendChild(indicator);
        }
        setState("connecting", "connecting…", "Connecting to the supervisor's live updates.");
    }

    function showChanged() {
        if (changedNotice || !indicator) {
            return;
        }
        changedNotice = document.createElement("a");
        changedNotice.id = "live-changed";
        changedNotice.href = window.location.href;
        changedNotice.textContent = "changed: reload";
        changedNotice.title = "Rows were added or removed since this page was loaded.";
        indicator.parentNode.insertBefore(changedNotice, indicator.nextSibling);
    }

    // -- times --------------------------------------------------------------------------------------------------

    function ago(ms) {
        var seconds = Math.trunc(ms / 1000), size = Math.abs(seconds), unit = UNITS[UNITS.length - 1];
        for (var i = 0; i < UNITS.length; i++) {
            if (size >= UNITS[i][0]) {
                unit = UNITS[i];
                break;
            }
        }
        var amount = Math.floor(size / unit[0]) + " " + unit[1];
        return seconds < 0 ? "in " + amount : amount + " ago";
    }

    function tick() {
        var now = Date.now() + skew;
        each("time[data-live-time]", function (time) {
            var at = parseTime(time.getAttribute("datetime"));
            var shown = time.querySelector("[data-ago]");
            if (shown && !isNaN(at)) {
                shown.textContent = ago(now - at);
            }
        });
    }

    // -- applying events in place -------------------------------------------------------------------------------

    function setBadge(badge, value, title) {
        badge.textContent = value;
        badge.className = "appsup-badge appsup-badge-" + value;
        badge.title = title || "";
    }

    function showPlacement(element, event) {
        element.setAttribute("data-state", event.state);
        if (event.at) {
            element.setAttribute("data-at", event.at);
        }
        // Running on a degraded environment is refused by the proxy there: the badge says degraded, as the
        // server's page does, and there is nothing to open.
        var degraded = element.getAttribute("data-environment-status") === "degraded";
        var shown = event.state === "running" && degraded ? "degraded" : event.state;
        var badge = element.querySelector("[data-live-badge]");
        if (badge) {
            var title = shown === "degraded" ? element.getAttribute("data-environment-problem") : event.error;
            setBadge(badge, shown, typeof title === "string" ? title : "");
        }
        var open = element.querySelector("a[data-open]");
        if (open) {
            open.hidden = shown !== "running";
        }
    }

    function applyPlacement(event) {
        if (typeof event.app !== "string" || typeof event.environment !== "string" ||
                STATES.indexOf(event.state) < 0) {
            return;
        }
        var key = event.app + ":" + event.environment;
        latest[key] = event;
        each("[data-live-placement=" + quoted(key) + "]", function (element) {
            showPlacement(element, event);
        });
    }

    function applyEnvironment(event) {
        if (typeof event.name !== "string" || STATUSES.indexOf(event.status) < 0) {
            return;
        }
        each("[data-live-environment=" + quoted(event.name) + "]", function (element) {
            element.setAttribute("data-status", event.status);
            var badge = element.querySelector("[data-live-badge]");
            if (badge) {
                setBadge(badge, event.status, typeof event.problem === "string" ? event.problem : "");
            }
        });
        each("[data-live-placement$=" + quoted(":" + event.name) + "]", function (element) {
            element.setAttribute("data-environment-status", event.status);
            element.setAttribute("data-environment-problem", typeof event.problem === "string" ? event.problem : "");
            if (event.status !== "offline") {
                var last = latest[element.getAttribute("data-live-placement")];
                showPlacement(element, {state: element.getAttribute("data-state"), error: last ? last.error : ""});
            }
        });
        if (event.status === "offline") {
            // What an offline environment last said is stale: shown as unknown, as the server shows it.
            each("[data-live-placement$=" + quoted(":" + event.name) + "]", function (element) {
                delete latest[element.getAttribute("data-live-placement")];
                showPlacement(element, {state: "unknown", error: event.problem});
            });
        }
    }

    // -- re-reading the page's fragments --------------------------------------------------------------------------

    function scheduleRefresh(delay) {
        var due = Date.now() + delay;
        if (refreshTimer !== null) {
            if (refreshDue <= due) {
                return;
            }
            clearTimeout(refreshTimer);
        }
        refreshDue = due;
        refreshTimer = setTimeout(function () {
            refreshTimer = null;
            refresh();
        }, delay);
    }

    function refresh() {
        if (!document.querySelector("[data-live-fragment]")) {
            return;
        }
        if (refreshing) {
            again = true;
            return;
        }
        refreshing = true;
        fetch(window.location.href, {credentials: "same-origin", cache: "no-store",
                                     headers: {"X-Requested-With": "XMLHttpRequest"}})
            .then(function (response) {
                if (!response.ok || response.redirected) {  // logged out, say: keep what is shown
                    throw new Error("HTTP " + response.status);
                }
                return response.text();
            })
            .then(function (html) {
                swap(new DOMParser().parseFromString(html, "text/html"));
            })
            .catch(function () {})
            .then(function () {
                refreshing = false;
                if (again) {
                    again = false;
                    refresh();
                }
            });
    }

    function swap(fresh) {
        var here = {};
        each("[data-live-fragment]", function (element) {
            var key = element.getAttribute("data-live-fragment");
            var replacement = fresh.querySelector("[data-live-fragment=" + quoted(key) + "]");
            here[key] = true;
            if (replacement) {
                element.replaceWith(document.importNode(replacement, true));
            } else {
                showChanged();
            }
        });
        Array.prototype.forEach.call(fresh.querySelectorAll("[data-live-fragment]"), function (element) {
            if (!here[element.getAttribute("data-live-fragment")]) {
                showChanged();
            }
        });
        // Events newer than what the server had mirrored when it answered stay shown.
        Object.keys(latest).forEach(function (key) {
            var event = latest[key];
            each("[data-live-placement=" + quoted(key) + "]", function (element) {
                var shown = parseTime(element.getAttribute("data-at"));
                if (!(shown >= parseTime(event.at))) {
                    showPlacement(element, event);
                }
            });
        });
        tick();
    }

    // -- the socket -------------------------------------------------------------------------------------------------

    // "live" only while the controller keeps what the page shows up to date; its warning (no controller has run
    // for a while, or it cannot reach Redis) otherwise, which says what to do.
    function showLive() {
        if (supervisorWarning) {
            setState("stale", "live, not kept up to date", supervisorWarning);
        } else {
            setState("live", "live", "This page updates itself as things change.");
        }
    }

    function onSupervisor(event) {
        supervisorWarning = typeof event.warning === "string" ? event.warning : "";
        if (state === "live" || state === "stale") {
            showLive();
        }
    }

    function onStream(event) {
        if (event.status === "live") {
            if (typeof event.now === "number") {
                skew = event.now * 1000 - Date.now();
                tick();
            }
            var first = !everLive && Date.now() - loadedAt < 5000;
            everLive = true;
            retry = RETRY_FIRST;
            showLive();
            if (!first) {
                scheduleRefresh(0);  // whatever changed while the socket was away
            }
        } else if (event.status === "reconnecting") {
            setState("reconnecting", "reconnecting…",
                     (typeof event.problem === "string" ? event.problem + ". " : "") +
                     "What this page shows may be out of date.");
        }
    }

    function onMessage(message) {
        var event;
        try {
            event = JSON.parse(message.data);
        } catch (e) {
            return;
        }
        if (!event || typeof event !== "object") {
            return;
        }
        if (event.type === "stream") {
            onStream(event);
        } else if (event.type === "placement") {
            applyPlacement(event);
            scheduleRefresh(SETTLE);
        } else if (event.type === "environment") {
            applyEnvironment(event);
            scheduleRefresh(SOON);
        } else if (event.type === "app" || event.type === "upgrade") {
            scheduleRefresh(SOON);
        } else if (event.type === "supervisor") {
            onSupervisor(event);
        } else if (event.type === "refused") {
            setState("refused", "not live", typeof event.error === "string" ? event.error : "");
        }
    }

    function connect() {
        var scheme = window.location.protocol === "https:" ? "wss://" : "ws://";
        var socket;
        try {
            socket = new WebSocket(scheme + window.location.host + SOCKET_PATH);
        } catch (e) {
            setTimeout(connect, REFUSED_RETRY);
            return;
        }
        socket.onmessage = onMessage;
        socket.onclose = function (close) {
            if (state === "refused" || close.code === 4401 || close.code === 4403) {
                setTimeout(connect, REFUSED_RETRY);  // logged out, say; a new login lets it in again
                return;
            }
            setState("reconnecting", "reconnecting…", "The live updates' connection was lost; retrying. " +
                     "What this page shows may be out of date.");
            setTimeout(connect, retry);
            retry = Math.min(retry * 2, RETRY_CAP);
        };
    }

    function start() {
        if (!document.querySelector(MARKED) || !window.WebSocket) {
            return;
        }
        makeIndicator();
        tick();
        setInterval(tick, 1000);
        setInterval(function () {
            if (state === "live" && document.visibilityState !== "hidden") {
                refresh();
            }
        }, RESYNC);
        connect();
    }

    if (document.readyState === "loading") {
        document.addEventListener("DOMContentLoaded", start);
    } else {
        start();
    }
})();
