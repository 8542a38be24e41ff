// The eventbus dashboard. Every value that comes from an event (keys,
// errors, payloads, handler names) is put in the page with textContent,
// never as HTML.
"use strict";
(function () {
  // Count what the Content-Security-Policy blocks, for tests: the page
  // must need nothing it forbids.
  document.addEventListener("securitypolicyviolation", (e) => {
    const d = document.documentElement.dataset;
    d.cspViolations = (d.cspViolations ? d.cspViolations + " " : "") + e.violatedDirective + ":" + e.blockedURI;
  });
  const meta = (n) => (document.querySelector('meta[name="' + n + '"]') || {}).content || "";
  const actions = meta("eventbus-actions") === "on";
  const token = meta("eventbus-csrf");
  const POOLS = ["user", "channel", "pusher"];
  const WINDOW = 300; // samples: five minutes

  // el builds an element; children are nodes or strings (set as text).
  function el(tag, props, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(props || {})) {
      if (k === "class") e.className = v;
      else if (k === "text") e.textContent = v;
      else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, v);
    }
    for (const c of children) {
      if (c == null) continue;
      e.append(typeof c === "string" || typeof c === "number" ? document.createTextNode(String(c)) : c);
    }
    return e;
  }
  const $ = (id) => document.getElementById(id);
  const fmt = (n) => (typeof n === "number" ? (Number.isInteger(n) ? n.toLocaleString() : n.toFixed(n < 10 ? 2 : 1)) : String(n));
  const when = (t) => { const d = new Date(t); return isNaN(d) || d.getFullYear() < 2000 ? "" : d.toLocaleTimeString(); };
  const inSecs = (t) => { const d = (new Date(t) - Date.now()) / 1000; return isNaN(d) ? "" : d <= 0 ? "due" : "in " + d.toFixed(1) + " s"; };

  async function getJSON(path) {
    const r = await fetch(path, { headers: { Accept: "application/json" }, cache: "no-store" });
    if (!r.ok) throw new Error(path + ": " + r.status);
    return r.json();
  }

  function table(t, head, rows, empty) {
    t.replaceChildren();
    t.append(el("thead", null, el("tr", null, ...head.map((h) => el("th", { text: h })))));
    const body = el("tbody");
    if (rows.length === 0) body.append(el("tr", null, el("td", { class: "empty", colspan: String(head.length), text: empty })));
    for (const r of rows) body.append(r);
    t.append(body);
  }
  const td = (v, cls) => el("td", cls ? { class: cls, text: v == null ? "" : String(v) } : { text: v == null ? "" : String(v) });
  const num = (v) => el("td", { class: "num", text: fmt(v) });

  // ---- tabs
  let current = "overview";
  function show(view) {
    if (!document.getElementById("view-" + view)) view = "overview";
    current = view;
    for (const x of document.querySelectorAll("#tabs button")) x.classList.toggle("active", x.dataset.view === view);
    for (const v of document.querySelectorAll(".view")) v.hidden = v.id !== "view-" + view;
    if (location.hash.slice(1) !== view) history.replaceState(null, "", "#" + view);
    refresh();
  }
  for (const b of document.querySelectorAll("#tabs button")) b.addEventListener("click", () => show(b.dataset.view));
  window.addEventListener("hashchange", () => show(location.hash.slice(1)));

  // ---- overview: cards and live charts
  const FIELDS = [
    ["busy", "workers busy"], ["idle", "idle"], ["queued", "queued"], ["inFlight", "in flight"],
    ["retrying", "retrying"], ["handled", "handled"], ["failed", "failed"], ["deadLettered", "dead-lettered"],
    ["handledPerSec", "handled/s"], ["failedPerSec", "failed/s"], ["p50ms", "p50 ms"], ["p99ms", "p99 ms"], ["maxMs", "max ms"],
  ];
  const cards = {};
  for (const p of POOLS) {
    const dl = el("dl");
    const dd = {};
    for (const [k, label] of FIELDS) {
      dd[k] = el("dd", { "data-pool": p, "data-field": k, text: "–" });
      dl.append(el("div", null, el("dt", { text: label }), dd[k]));
    }
    cards[p] = dd;
    $("pools").append(el("div", { class: "card", id: "pool-" + p }, el("h3", { text: p + " pool" }), dl));
  }
  const rates = {}; // latest rates per pool from the stream

  function renderOverview(o) {
    for (const pv of o.pools) {
      const dd = cards[pv.name];
      if (!dd) continue;
      const r = rates[pv.name] || {};
      const v = Object.assign({}, pv, { handledPerSec: r.handledPerSec ?? 0, failedPerSec: r.failedPerSec ?? 0 });
      for (const [k] of FIELDS) {
        dd[k].textContent = fmt(v[k] ?? 0);
        dd[k].classList.toggle("bad", (k === "failed" || k === "deadLettered" || k === "failedPerSec") && v[k] > 0);
      }
    }
    table($("subs-table"), ["subscriber", "workers", "lag (queued)", "in flight", "retrying", "handled", "failed", "dead-lettered", "p50 ms", "p99 ms", "max ms"],
      o.subscribers.map((s) => el("tr", null, td(s.name), num(s.workers), num(s.queued), num(s.inFlight), num(s.retrying),
        num(s.handled), num(s.failed), num(s.deadLettered), num(s.p50ms), num(s.p99ms), num(s.maxMs))), "no subscribers");
    const dl = $("dl-count");
    let total = 0;
    for (const p of o.pools) total += p.deadLettered;
    for (const s of o.subscribers) total += s.deadLettered;
    dl.textContent = total > 0 ? String(total) : "";
  }

  // One chart per pool: rates on the left axis, gauges on the right.
  const series = {}; // pool -> [times, handled/s, failed/s, queued, inFlight, retrying]
  const charts = {};
  for (const p of POOLS) series[p] = [[], [], [], [], [], []];
  function chartWidth(box) { return Math.max(260, Math.floor(box.getBoundingClientRect().width) - 14); }
  function makeCharts() {
    if (typeof uPlot === "undefined") return;
    const boxes = {};
    for (const p of POOLS) {
      boxes[p] = el("div", { class: "chart", id: "chart-" + p }, el("div", { class: "title", text: p + " pool, last 5 minutes" }));
      $("charts").append(boxes[p]);
    }
    // Measure once every box is in the grid.
    for (const p of POOLS) {
      const s = (label, scale, stroke, width) => ({ label, scale, stroke, width, points: { show: false } });
      charts[p] = new uPlot({
        width: chartWidth(boxes[p]), height: 170,
        legend: { show: true, live: false },
        cursor: { show: true, drag: { x: false, y: false } },
        scales: { x: { time: true }, rate: { auto: true, range: (u, lo, hi) => [0, Math.max(1, hi)] }, n: { auto: true, range: (u, lo, hi) => [0, Math.max(1, hi)] } },
        axes: [{}, { scale: "rate", size: 44 }, { scale: "n", side: 1, size: 40, grid: { show: false } }],
        series: [
          {},
          s("handled/s", "rate", "#2f6fde", 1.5),
          s("failed/s", "rate", "#c8382f", 1.5),
          s("queued", "n", "#c98a12", 1),
          s("in flight", "n", "#2f9e5b", 1),
          s("retrying", "n", "#8a4fd6", 1),
        ],
      }, series[p], boxes[p]);
    }
    window.addEventListener("resize", () => {
      for (const p of POOLS) charts[p].setSize({ width: chartWidth(boxes[p]), height: 170 });
    });
  }
  function addSample(s) {
    for (const pv of s.pools) {
      const d = series[pv.name];
      if (!d) continue;
      d[0].push(s.t / 1000); d[1].push(pv.handledPerSec); d[2].push(pv.failedPerSec);
      d[3].push(pv.queued); d[4].push(pv.inFlight); d[5].push(pv.retrying);
      if (d[0].length > WINDOW) for (const a of d) a.shift();
      rates[pv.name] = pv;
    }
  }
  function drawCharts() {
    for (const p of POOLS) if (charts[p]) charts[p].setData(series[p]);
  }

  function connect() {
    const live = $("live");
    const es = new EventSource("api/stream");
    es.addEventListener("open", () => { live.textContent = "live"; live.className = "live on"; });
    es.addEventListener("error", () => { live.textContent = "reconnecting…"; live.className = "live off"; });
    es.addEventListener("history", (e) => {
      for (const p of POOLS) for (const a of series[p]) a.length = 0;
      for (const s of JSON.parse(e.data)) addSample(s);
      drawCharts();
    });
    es.addEventListener("sample", (e) => {
      addSample(JSON.parse(e.data));
      document.body.dataset.samples = String(Number(document.body.dataset.samples || 0) + 1);
      drawCharts();
      if (current === "overview") refresh();
    });
  }

  // ---- handlers
  function renderHandlers(h) {
    const box = $("types");
    box.replaceChildren();
    if (h.types.length === 0) box.append(el("p", { class: "hint", text: "No handler registered." }));
    for (const t of h.types) {
      const chain = el("div", { class: "chain" }, el("span", { class: "hint", text: "chain:" }));
      t.handlers.forEach((n, i) => {
        if (i > 0) chain.append(el("span", { class: "arrow", text: "→" }));
        chain.append(el("span", { class: "h", text: n }));
      });
      if (t.handlers.length === 0) chain.append(el("span", { class: "hint", text: t.routed ? "routed to a transport" : "none" }));
      const tags = [el("span", { class: "tag", text: t.pool + " pool" })];
      if (t.durable) tags.push(el("span", { class: "tag", text: "durable" }));
      if (t.routed) tags.push(el("span", { class: "tag", text: "routed" }));
      const div = el("div", { class: "type" }, el("h3", null, t.name + " (" + t.type + ")", ...tags), chain);
      if (t.handlerStats && t.handlerStats.length > 0) {
        const ht = el("table", { class: "handler-stats" });
        table(ht, ["handler", "attempts", "failed", "retries", "mean ms", "max ms"],
          t.handlerStats.map((h) => el("tr", null, td(h.name), num(h.calls), num(h.failed), num(h.retries), num(h.meanMs), num(h.maxMs))), "");
        div.append(ht);
      }
      if (t.subscribers.length > 0) {
        const st = el("table");
        table(st, ["subscriber", "lag (queued)", "in flight", "retrying", "handled", "failed", "retried", "dead-lettered", "p50 ms", "p99 ms", "max ms"],
          t.subscribers.map((s) => el("tr", null, td(s.name), num(s.queued), num(s.inFlight), num(s.retrying), num(s.handled),
            num(s.failed), num(s.retried), num(s.deadLettered), num(s.p50ms), num(s.p99ms), num(s.maxMs))), "");
        div.append(st);
      }
      box.append(div);
    }
    const pt = el("table");
    table(pt, ["pool", "handled", "stopped", "failed", "retried", "dead-lettered", "panics", "timeouts", "rejected", "p50 ms", "p99 ms", "max ms"],
      h.pools.map((p) => el("tr", null, td(p.name), num(p.handled), num(p.stopped), num(p.failed), num(p.retried), num(p.deadLettered),
        num(p.panics), num(p.timeouts), num(p.rejected), num(p.p50ms), num(p.p99ms), num(p.maxMs))), "");
    box.append(el("h2", { text: "Chains, per pool" }), pt);
  }

  // ---- keys
  const where = (x) => x.pool + (x.subscriber ? " / " + x.subscriber : "");
  function renderKeys(k) {
    table($("parked-table"), ["key", "type", "where", "handler", "attempt", "last error", "next try", "events held"],
      k.parked.map((p) => el("tr", { class: "parked" }, td(p.event.key, "key"), td(p.event.typeName), td(where(p)), td(p.handler),
        num(p.attempt), td(p.error, "err"), td(inSecs(p.nextTry)), num(p.events))), "no key waits for a retry");
    $("parked-note").textContent = k.skipped > 0 ? k.skipped + " shard(s) were in a worker's hands at that instant; keys they may have parked are not listed." : "";
    table($("busy-table"), ["where", "shard", "held", "queued", "running", "head key", "head type", "events of head key"],
      k.busy.map((b) => el("tr", null, td(where(b)), num(b.shard), num(b.held), num(b.queued), td(b.running ? "yes" : "no"),
        td(b.head ? b.head.key + (b.headParked ? " (parked)" : "") : "(in a worker's hands)", "key"), td(b.head ? b.head.typeName : ""), num(b.headQueued))), "no shard holds work");
  }

  // ---- dead letters
  async function act(kind, body) {
    const status = $("action-status");
    status.textContent = kind + "…";
    try {
      const r = await fetch("api/deadletters/" + kind, {
        method: "POST", cache: "no-store",
        headers: { "Content-Type": "application/json", "X-CSRF-Token": token },
        body: JSON.stringify(body),
      });
      const res = await r.json();
      status.textContent = r.ok ? kind + ": " + res.done + " done" : kind + " failed: " + res.error;
    } catch (e) {
      status.textContent = kind + " failed: " + e;
    }
    refresh();
  }
  function letterRow(l, journal) {
    const cells = [];
    if (journal) cells.push(num(l.id));
    cells.push(td(when(l.time)), td(l.event.typeName), td(l.event.key, "key"), td(l.handler), num(l.attempts), td(l.error, "err"));
    if (meta("eventbus-payloads") === "on") cells.push(td(l.event.payload || "", "payload"));
    if (journal && actions) {
      cells.push(el("td", null,
        el("button", { class: "act redrive", "data-id": String(l.id), text: "Redrive", onclick: () => act("redrive", { ids: [l.id] }) }), " ",
        el("button", { class: "act danger purge", "data-id": String(l.id), text: "Purge", onclick: () => act("purge", { ids: [l.id] }) })));
    }
    return el("tr", { class: "letter" }, ...cells);
  }
  function renderDeadLetters(d) {
    const head = ["time", "type", "key", "handler", "attempts", "error"];
    if (meta("eventbus-payloads") === "on") head.push("payload");
    $("dl-journal-box").hidden = !d.hasJournal;
    $("dl-journal-actions").hidden = !(d.hasJournal && actions);
    if (d.hasJournal) {
      const jh = ["id", ...head];
      if (actions) jh.push("");
      table($("dl-journal"), jh, d.journal.map((l) => letterRow(l, true)), d.journalError ? "error: " + d.journalError : "none");
    }
    $("dl-total").textContent = d.recentTotal > 0 ? "(" + d.recentTotal + " received)" : "";
    table($("dl-recent"), head, d.recent.map((l) => letterRow(l, false)), "none");
  }
  $("redrive-all").addEventListener("click", () => act("redrive", { all: true }));
  $("purge-all").addEventListener("click", () => { if (confirm("Purge every dead letter of the journal?")) act("purge", { all: true }); });

  // ---- journal and bridge
  function kv(t, obj, empty) {
    table(t, ["", ""], obj ? Object.entries(obj).map(([k, v]) => el("tr", null, td(k), td(typeof v === "object" ? JSON.stringify(v) : fmt(v)))) : [], empty);
  }
  function renderJournal(j, b) {
    kv($("journal-table"), j.present ? { segments: j.segments, bytes: j.bytes, "pending records": j.pending, "dead letters": j.deadLetters, "next id": j.nextId, syncs: j.syncs } : null, "no journal");
    kv($("bridge-table"), b.present ? (b.stats || { error: b.error }) : null, "no bridge");
  }

  // ---- refresh the view shown
  let busy = false;
  async function refresh() {
    if (busy) return;
    busy = true;
    try {
      switch (current) {
        case "overview": renderOverview(await getJSON("api/overview")); break;
        case "handlers": renderHandlers(await getJSON("api/handlers")); break;
        case "keys": renderKeys(await getJSON("api/keys?n=30")); break;
        case "deadletters": renderDeadLetters(await getJSON("api/deadletters")); break;
        case "journal": renderJournal(await getJSON("api/journal"), await getJSON("api/bridge")); break;
      }
    } catch (e) {
      $("live").textContent = String(e);
    } finally {
      busy = false;
    }
  }
  // Views other than the overview (refreshed by each sample) poll while shown.
  setInterval(() => { if (current !== "overview" && !document.hidden) refresh(); }, 1000);

  makeCharts();
  show(location.hash.slice(1) || "overview");
  connect();
})();
