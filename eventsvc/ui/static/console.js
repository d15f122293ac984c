/* eventsvc console: the type filter's form, and live updates over the SSE API.
   Builds every node with textContent (never HTML from data); no eval, no inline script. */
(function () {
  "use strict";

  var STATUS = { run_created: "created", run_started: "running", run_waiting_input: "waiting_input",
    run_resumed: "running", run_completed: "completed", run_failed: "failed", run_cancelled: "cancelled" };
  var TERMINAL = { completed: true, failed: true, cancelled: true };
  var VERIFY = { verify_start: "running", verify_pass: "passed", verify_fail: "failed" };
  var PREVIEW_CHARS = 140;
  var RETRY_MS = 2000;

  function node(tag, className, text) {
    var element = document.createElement(tag);
    if (className) { element.className = className; }
    if (text !== undefined && text !== null) { element.textContent = String(text); }
    return element;
  }

  function exactTime(timestamp) {
    var when = new Date(timestamp);
    if (isNaN(when.getTime())) { return String(timestamp); }
    return when.toISOString().replace("T", " ").replace(/\.000Z$|Z$/, "") + " UTC";
  }

  /* -- the type filter ------------------------------------------------------------------
     A plain GET form (the server narrows the list across pages); the script only adds
     "tick all / none" and keeps the form from asking for no type at all. */

  function typeFilterForm(form) {
    var boxes = form.querySelectorAll("input[type=checkbox]");
    var apply = form.querySelector("button[type=submit]");
    var ticks = form.querySelector(".filter-ticks");
    function update() {
      var ticked = 0;
      boxes.forEach(function (box) { if (box.checked) { ticked += 1; } });
      apply.disabled = ticked === 0;
      apply.title = ticked === 0 ? "Tick at least one type" : "";
    }
    function setAll(checked) {
      boxes.forEach(function (box) { box.checked = checked; });
      update();
    }
    if (ticks) { ticks.hidden = false; }
    form.addEventListener("change", update);
    form.querySelector("[data-filter-all]").addEventListener("click", function () { setAll(true); });
    form.querySelector("[data-filter-none]").addEventListener("click", function () { setAll(false); });
    update();
  }

  /* -- rows and badges ------------------------------------------------------------------ */

  function eventRow(event, category) {
    var row = node("tr", "fresh"), cell, link;
    row.id = "ev-" + event.seq;
    row.dataset.type = event.type;
    cell = node("td", "num seq"); link = node("a", null, event.seq); link.href = "#ev-" + event.seq;
    cell.appendChild(link); row.appendChild(cell);
    cell = node("td", "time"); var time = node("time", null, exactTime(event.timestamp));
    time.dateTime = event.timestamp; cell.appendChild(time); row.appendChild(cell);
    cell = node("td"); link = node("a", "type cat-" + category, event.type);
    link.href = "?types=" + encodeURIComponent(event.type); link.title = "Show only " + event.type + " events";
    cell.appendChild(link); row.appendChild(cell);
    cell = node("td", "id");
    if (typeof event.run_id === "string") {
      link = node("a", null, event.run_id); link.href = "/ui/runs/" + encodeURIComponent(event.run_id);
      cell.appendChild(link);
    } else {
      cell.appendChild(node("span", "none", "—"));
    }
    row.appendChild(cell);
    row.appendChild(node("td", "source", event.source));
    var payload = event.payload || {}, compact = JSON.stringify(payload);
    if (compact.length > PREVIEW_CHARS) { compact = compact.slice(0, PREVIEW_CHARS - 1) + "…"; }
    var details = node("details");
    details.appendChild(node("summary", null, compact));
    details.appendChild(node("pre", null, JSON.stringify(payload, null, 2)));
    cell = node("td", "payload"); cell.appendChild(details); row.appendChild(cell);
    return row;
  }

  function setBadge(badge, kind, value) {
    if (!badge) { return; }
    badge.className = "badge " + kind + "-" + (value || "none");
    badge.textContent = value ? value.replace("_", " ") : "—";
    badge.dataset.value = value || "";
  }

  function badgeValue(badge) {
    var match = /(?:^|\s)status-(\S+)/.exec(badge.className);
    return match ? match[1] : "";
  }

  function followLifecycle(scope, event) {
    var status = STATUS[event.type], verify = VERIFY[event.type];
    if (status) {
      var badge = scope.querySelector("[data-badge=status]");
      if (badge && !TERMINAL[badgeValue(badge)]) { setBadge(badge, "status", status); }
    }
    if (verify) { setBadge(scope.querySelector("[data-badge=verify]"), "verify", verify); }
  }

  function runRow(runs, runId) {
    var rows = runs.querySelectorAll("tr[data-run-id]");
    for (var i = 0; i < rows.length; i += 1) {
      if (rows[i].dataset.runId === runId) { return rows[i]; }
    }
    var row = node("tr", "fresh"), cell = node("td", "id"), link = node("a", null, runId);
    row.dataset.runId = runId;
    link.href = "/ui/runs/" + encodeURIComponent(runId);
    cell.appendChild(link); row.appendChild(cell);
    cell = node("td"); var status = node("span", "badge status-unknown", "unknown"); status.dataset.badge = "status";
    cell.appendChild(status); row.appendChild(cell);
    cell = node("td"); var verify = node("span", "badge verify-none", "—"); verify.dataset.badge = "verify";
    cell.appendChild(verify); row.appendChild(cell);
    row.appendChild(node("td", "num", "")); row.appendChild(node("td", null, "")); row.appendChild(node("td", null, ""));
    runs.appendChild(row);
    var none = document.getElementById("no-runs");
    if (none) { none.remove(); }
    return row;
  }

  /* -- live ----------------------------------------------------------------------------- */

  function Live(page) {
    this.page = page;
    this.base = page.dataset.stream;
    this.filter = page.dataset.filter || "";  // the page's types=, so the stream sends only matching events
    this.lastSeq = parseInt(page.dataset.lastSeq, 10) || 0;
    this.types = JSON.parse(page.dataset.types);
    this.categories = JSON.parse(page.dataset.categories);
    this.state = document.getElementById("live-state");
    this.rows = document.getElementById("event-rows");
    this.source = null;
    this.ended = false;
    this.refreshing = false;
    this.refreshAgain = false;
    this.open();
  }

  Live.prototype.show = function (state, text) {
    this.state.dataset.state = state;
    this.state.textContent = text;
  };

  Live.prototype.open = function () {
    var self = this;
    // Resume after the last event shown; on its own reconnects EventSource sends Last-Event-ID.
    var source = new EventSource(this.base + "?since_seq=" + this.lastSeq +
      (this.filter ? "&types=" + encodeURIComponent(this.filter) : ""));
    this.source = source;
    source.onopen = function () { self.show("live", "Live: new events appear as they are appended."); };
    source.onerror = function (failure) {
      // An event of our own type "error" arrives as a MessageEvent named "error" too: not a failure.
      if (self.ended || failure instanceof MessageEvent) { return; }
      self.show("reconnecting", "Reconnecting… (events appended meanwhile will follow, each once)");
      if (source.readyState === EventSource.CLOSED) {
        self.source = null;
        window.setTimeout(function () { if (!self.ended) { self.open(); } }, RETRY_MS);
      }
    };
    var deliver = function (message) { self.deliver(message); };
    this.types.forEach(function (type) { source.addEventListener(type, deliver); });
    source.addEventListener("end", function () { self.end(); });
  };

  Live.prototype.deliver = function (message) {
    var event;
    try { event = JSON.parse(message.data); } catch (error) { return; }
    if (typeof event.seq !== "number" || event.seq <= this.lastSeq) { return; }
    this.lastSeq = event.seq;
    var category = this.categories[event.type] || "extra";
    var none = document.getElementById("no-events");
    if (none) { none.remove(); }
    this.rows.closest(".table-wrap").classList.remove("empty");
    this.rows.appendChild(eventRow(event, category));
    // Under a filter the stream brings matching events only: count those, not the session's.
    var count = document.getElementById(this.filter ? "shown-count" : "event-count");
    if (count) { count.textContent = String((parseInt(count.textContent, 10) || 0) + 1); }
    if (this.page.dataset.kind === "run") {
      followLifecycle(document.getElementById("run-live"), event);
      this.refresh();
    } else if (typeof event.run_id === "string") {
      followLifecycle(runRow(document.getElementById("run-rows"), event.run_id), event);
    }
  };

  Live.prototype.end = function () {
    this.ended = true;
    if (this.source) { this.source.close(); }
    this.show("ended", "Stream ended: the run is over.");
    this.refresh();
  };

  /* The run's header and timeline are drawn by the server: fetch them again after a change. */
  Live.prototype.refresh = function () {
    var self = this, target = document.getElementById("run-live");
    if (!this.page.dataset.fragment || !target) { return; }
    if (this.refreshing) { this.refreshAgain = true; return; }
    this.refreshing = true;
    window.fetch(this.page.dataset.fragment, { credentials: "same-origin", headers: { Accept: "text/html" } })
      .then(function (response) { return response.ok ? response.text() : null; })
      .then(function (html) {
        if (html !== null) {
          var template = document.createElement("template");
          template.innerHTML = html;
          target.replaceChildren(template.content);
        }
      })
      .catch(function () { /* the next event or reconnect refreshes again */ })
      .then(function () {
        self.refreshing = false;
        if (self.refreshAgain) { self.refreshAgain = false; self.refresh(); }
      });
  };

  function start() {
    var page = document.getElementById("page");
    var form = document.getElementById("filter-form");
    if (form) { typeFilterForm(form); }
    if (page && page.dataset.stream && window.EventSource) { new Live(page); }
  }

  start();
}());
