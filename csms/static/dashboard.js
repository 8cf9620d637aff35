// Netbewust live dashboard: reads the operator API, follows the SSE stream, draws with <canvas>.
// No build step and no third-party code: the daemon may run on a closed network.
"use strict";

(() => {
  const TOKEN_KEY = "netbewust.apiToken";
  const WINDOW_S = 10 * 60;          // chart time window
  const MAX_POINTS = 3000;           // per transformer
  const MAX_LOG = 200;               // event log lines
  const REFRESH_MIN_MS = 250;        // coalesce bursts of events into one snapshot fetch
  const REFRESH_IDLE_MS = 5000;      // keep the time axis moving when nothing happens
  const LOGGED = ["grid.", "station.connected", "station.disconnected", "station.booted", "station.blocked",
                  "transaction.started", "transaction.ended"];
  const REFRESHING = ["grid.", "transaction.", "meter.values", "connector.status", "station.", "ev.needs"];

  const state = {
    token: null,
    history: new Map(),  // transformer id -> [{t, load, plan, limit}]
    cards: new Map(),    // transformer id -> card elements
    lastSnapshot: null,
    refreshTimer: null,
    lastRefresh: 0,
    streamAbort: null,
    streamRetryMs: 1000,
  };
  window.netbewust = state;  // for debugging in the browser console

  const $ = (id) => document.getElementById(id);

  class AuthError extends Error {}

  // Token ---------------------------------------------------------------------------------------
  function takeTokenFromUrl() {
    const url = new URL(window.location.href);
    const token = url.searchParams.get("token");
    if (token) {
      sessionStorage.setItem(TOKEN_KEY, token);
      url.searchParams.delete("token");  // keep it out of the history and of screenshots
      window.history.replaceState(null, "", url.pathname + url.search + url.hash);
    }
  }

  function showLogin(message) {
    stopStream();
    $("main").hidden = true;
    $("logout").hidden = true;
    $("login").hidden = false;
    const err = $("login-error");
    err.hidden = !message;
    err.textContent = message || "";
    $("token-input").focus();
  }

  async function api(path) {
    const response = await fetch(path, { headers: { Authorization: "Bearer " + state.token } });
    if (response.status === 401 || response.status === 403) {
      throw new AuthError((await response.json().catch(() => ({}))).error || "token refused");
    }
    const body = await response.json().catch(() => ({}));
    if (!response.ok) {
      const err = new Error(body.error || response.statusText);
      err.status = response.status;
      throw err;
    }
    return body;
  }

  // Formatting ----------------------------------------------------------------------------------
  const kw = (v) => (v === null || v === undefined ? "–" : `${Number(v).toFixed(1)} kW`);
  const hhmmss = (t) => new Date(t).toLocaleTimeString([], { hour12: false });
  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (k === "class") node.className = v; else node.setAttribute(k, v);
    }
    for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
    return node;
  }

  // Snapshot ------------------------------------------------------------------------------------
  function scheduleRefresh(delay = REFRESH_MIN_MS) {
    if (state.refreshTimer !== null) return;
    const wait = Math.max(0, Math.min(delay, state.lastRefresh + REFRESH_MIN_MS - Date.now()));
    state.refreshTimer = setTimeout(refresh, wait);
  }

  async function refresh() {
    state.refreshTimer = null;
    state.lastRefresh = Date.now();
    try {
      render(await api("/api/grid"));
    } catch (e) {
      if (e instanceof AuthError) return showLogin(e.message);
      renderNoGrid(e.status === 503 ? e.message : `cannot read the grid state: ${e.message}`);
    } finally {
      if (state.refreshTimer === null && state.token) {
        state.refreshTimer = setTimeout(refresh, REFRESH_IDLE_MS);
      }
    }
  }

  function renderNoGrid(message) {
    $("transformers").replaceChildren(el("article", { class: "panel no-grid" }, message));
    state.cards.clear();
  }

  function render(snap) {
    state.lastSnapshot = snap;
    const groups = Object.values(snap.transformers || {});
    const sessions = groups.flatMap((g) => g.sessions || []);
    const summary = [
      ["transformers", groups.length],
      ["sessions", sessions.length],
      ["charging", sessions.filter((s) => s.state === "charging").length],
      ["paused", sessions.filter((s) => s.state === "paused").length],
      ["plans", snap.plans ?? "–"],
      ["last reaction", snap.last_reaction_s == null ? "–" : `${(snap.last_reaction_s * 1000).toFixed(0)} ms`],
    ];
    for (const [name, src] of Object.entries(snap.sources || {})) {  // e.g. the OpenADR VEN's link to the VTN
      summary.push([`${name} link`, src.fallback ? "safe limit" : (src.reachable ? "up" : "down")]);
    }
    $("summary").replaceChildren(...summary.map(([label, value]) =>
      el("div", { class: "card" }, el("b", {}, value), el("span", {}, label))));
    renderUftp(snap.uftp);
    if (!groups.length) return renderNoGrid("no transformers configured");
    const now = Date.now();
    for (const g of groups) {
      const points = state.history.get(g.transformer) || [];
      points.push({ t: now, load: g.measured_kw, plan: g.planned_kw, limit: g.limit_kw });
      while (points.length > MAX_POINTS || (points.length && points[0].t < now - WINDOW_S * 1000 * 2)) points.shift();
      state.history.set(g.transformer, points);
      renderCard(g, points);
    }
    for (const [tid, card] of state.cards) {
      if (!snap.transformers[tid]) { card.root.remove(); state.cards.delete(tid); }
    }
  }

  function renderUftp(u) {
    $("uftp").hidden = !u;
    if (!u) return;
    const dsos = Object.entries(u.dso || {}).map(([domain, d]) =>
      `${domain}: ${d.reachable === false ? "UNREACHABLE (" + (d.last_error || "?") + ")" : "reachable"}` +
      `${d.last_heard ? ", last heard " + new Date(d.last_heard).toLocaleTimeString() : ""}`);
    $("uftp-dso").textContent = `aggregator ${u.domain} at ${u.endpoint} · ${dsos.join(" · ") || "no DSO"}`;
    const rows = [];
    for (const o of (u.orders || []).slice(-10).reverse()) {
      for (const [n, i] of Object.entries(o.isps || {})) {
        rows.push(el("tr", {}, el("td", {}, o.order_reference), el("td", {}, o.group), el("td", {}, n),
          el("td", {}, new Date(i.start).toLocaleTimeString()), el("td", { class: "num" }, kw(i.baseline_kw)),
          el("td", { class: "num" }, kw(i.ordered_w / 1000)), el("td", { class: "num" }, kw(i.limit_kw)),
          el("td", { class: "num" }, i.measured_kw == null ? "–" : kw(i.measured_kw)),
          el("td", { class: "num" }, i.delivered_w == null ? "–" : kw(-i.delivered_w / 1000)),
          el("td", {}, o.settlement ? (o.settlement.disputed ? "disputed" : "settled") : o.status)));
      }
    }
    $("uftp-orders").replaceChildren(...rows);
    const last = (u.refusals || []).slice(-3).map((r) => `${r.type}: ${r.reason}`);
    $("uftp-refusals").textContent = last.length ? "refused: " + last.join(" · ") : "";
  }

  function cardFor(tid) {
    let card = state.cards.get(tid);
    if (card) return card;
    const root = $("transformer-template").content.firstElementChild.cloneNode(true);
    root.dataset.transformer = tid;
    $("transformers").querySelector(".no-grid")?.remove();
    $("transformers").append(root);
    const q = (sel) => root.querySelector(sel);
    card = { root, tid: q(".tid"), limit: q(".limit"), source: q(".source"), margin: q(".margin"),
             measured: q(".measured"),
             planned: q(".planned"), safe: q(".safe-mode"), infeasible: q(".infeasible"), canvas: q(".chart"),
             tbody: q("tbody") };
    state.cards.set(tid, card);
    return card;
  }

  function renderCard(g, points) {
    const card = cardFor(g.transformer);
    card.tid.textContent = g.transformer;
    card.limit.textContent = kw(g.limit_kw);
    card.root.dataset.limitKw = g.limit_kw ?? "";
    card.source.textContent = g.limit_source || "no limit";
    card.margin.textContent = kw(g.margin_kw);
    card.root.dataset.marginKw = g.margin_kw ?? "";
    card.measured.textContent = kw(g.measured_kw);
    card.planned.textContent = kw(g.planned_kw);
    card.safe.hidden = !g.safe_mode;
    card.infeasible.hidden = !g.infeasible;
    drawChart(card.canvas, points);
    renderSessions(card.tbody, g.sessions || []);
  }

  function renderSessions(tbody, sessions) {
    if (!sessions.length) {
      tbody.replaceChildren(el("tr", { class: "empty" }, el("td", { colspan: "9" }, "no charging sessions")));
      return;
    }
    const rows = [...sessions].sort((a, b) => (a.station_id + a.evse_id).localeCompare(b.station_id + b.evse_id))
      .map((s) => {
        const setpoint = s.setpoint_kw, actual = s.actual_kw;
        const scale = Math.max(Math.abs(setpoint || 0), Math.abs(actual || 0), 0.1);
        const bar = el("div", { class: "bar" },
          el("div", { class: "fill", style: `width:${Math.min(100, Math.abs(actual || 0) / scale * 100)}%` }));
        if (setpoint !== null && setpoint !== undefined) {
          bar.append(el("div", { class: "mark", style: `left:calc(${Math.min(100, Math.abs(setpoint) / scale * 100)}% - 1px)` }));
        }
        const need = s.need_kwh == null ? "–" : `${Number(s.need_kwh).toFixed(1)}`;
        const tr = el("tr", { "data-session": `${s.station_id}/${s.evse_id}`, "data-state": s.state },
          el("td", {}, s.station_id + (s.connected === false ? " (offline)" : "")),
          el("td", {}, s.evse_id),
          el("td", {}, el("span", { class: `state state-${s.state}` }, s.state)),
          el("td", { class: "num setpoint" }, kw(setpoint)),
          el("td", { class: "num actual" }, kw(actual)),
          el("td", {}, bar),
          el("td", { class: "num" }, `${Number(s.delivered_kwh || 0).toFixed(1)} / ${need} kWh`),
          el("td", {}, s.departure ? hhmmss(s.departure) : "–"),
          el("td", {}, s.push_status || "–"));
        return tr;
      });
    tbody.replaceChildren(...rows);
  }

  // Chart ---------------------------------------------------------------------------------------
  function niceStep(span, ticks) {
    const raw = Math.max(span, 1e-6) / ticks;
    const p = Math.pow(10, Math.floor(Math.log10(raw)));
    for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= raw) return m * p;
    return 10 * p;
  }

  function drawChart(canvas, points) {
    const dpr = window.devicePixelRatio || 1;
    const w = canvas.clientWidth || 600, h = canvas.clientHeight || 220;
    canvas.width = Math.round(w * dpr);
    canvas.height = Math.round(h * dpr);
    canvas.dataset.points = String(points.length);
    const ctx = canvas.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, w, h);
    const css = getComputedStyle(document.documentElement);
    const color = (name) => css.getPropertyValue(name).trim();
    const m = { l: 62, r: 14, t: 12, b: 24 };
    const pw = w - m.l - m.r, ph = h - m.t - m.b;
    const now = Date.now();
    const t1 = Math.max(now, points.length ? points[points.length - 1].t : now);
    const t0 = Math.min(t1 - 30 * 1000, Math.max(t1 - WINDOW_S * 1000, points.length ? points[0].t : t1));
    const values = points.filter((p) => p.t >= t0).flatMap((p) => [p.load, p.plan, p.limit])
      .filter((v) => typeof v === "number");
    const hi = Math.max(1, ...values) * 1.08, lo = Math.min(0, ...values) * 1.08;
    const step = niceStep(hi - lo, 4);
    const yMax = Math.ceil(hi / step) * step;
    const yMin = Math.floor(lo / step) * step;
    const x = (t) => m.l + (t - t0) / (t1 - t0) * pw;
    const y = (v) => m.t + (yMax - v) / (yMax - yMin) * ph;

    // Axes and grid
    ctx.font = "11px system-ui, sans-serif";
    ctx.fillStyle = color("--muted");
    ctx.strokeStyle = "#e7ebf0";
    ctx.lineWidth = 1;
    ctx.textAlign = "right";
    ctx.textBaseline = "middle";
    for (let v = yMin; v <= yMax + step / 2; v += step) {
      ctx.beginPath(); ctx.moveTo(m.l, Math.round(y(v)) + 0.5); ctx.lineTo(w - m.r, Math.round(y(v)) + 0.5); ctx.stroke();
      ctx.fillText(`${+v.toFixed(step < 1 ? 1 : 0)} kW`, m.l - 6, y(v));
    }
    ctx.textAlign = "center";
    ctx.textBaseline = "top";
    const span = t1 - t0;
    const tick = [10e3, 30e3, 60e3, 120e3, 300e3, 600e3].find((s) => span / s <= 6) || 600e3;
    for (let t = Math.ceil(t0 / tick) * tick; t <= t1; t += tick) {
      ctx.fillText(hhmmss(t), x(t), h - m.b + 6);
    }
    if (!points.length) return;
    const visible = points.filter((p) => p.t >= t0 - 1);

    // Measured load: filled area
    const loadPts = visible.filter((p) => typeof p.load === "number");
    if (loadPts.length) {
      ctx.beginPath();
      ctx.moveTo(x(loadPts[0].t), y(0));
      for (const p of loadPts) ctx.lineTo(x(p.t), y(p.load));
      ctx.lineTo(x(loadPts[loadPts.length - 1].t), y(0));
      ctx.closePath();
      ctx.fillStyle = "rgba(31,119,208,0.15)";
      ctx.fill();
      ctx.beginPath();
      loadPts.forEach((p, i) => (i ? ctx.lineTo(x(p.t), y(p.load)) : ctx.moveTo(x(p.t), y(p.load))));
      ctx.strokeStyle = color("--load"); ctx.lineWidth = 2; ctx.stroke();
    }
    // Planned load: dashed
    const planPts = visible.filter((p) => typeof p.plan === "number");
    if (planPts.length) {
      ctx.beginPath();
      planPts.forEach((p, i) => (i ? ctx.lineTo(x(p.t), y(p.plan)) : ctx.moveTo(x(p.t), y(p.plan))));
      ctx.setLineDash([5, 4]); ctx.strokeStyle = color("--plan"); ctx.lineWidth = 1.5; ctx.stroke(); ctx.setLineDash([]);
    }
    // Limit: a step line (it holds until the next change), gaps where there is none
    ctx.strokeStyle = color("--limit"); ctx.lineWidth = 2.5;
    ctx.beginPath();
    let prev = null;
    for (const p of visible) {
      if (typeof p.limit !== "number") { prev = null; continue; }
      if (prev === null) ctx.moveTo(x(p.t), y(p.limit));
      else { ctx.lineTo(x(p.t), y(prev.limit)); ctx.lineTo(x(p.t), y(p.limit)); }
      prev = p;
    }
    if (prev !== null) ctx.lineTo(x(t1), y(prev.limit));
    ctx.stroke();
    const last = visible[visible.length - 1];
    canvas.dataset.lastLimit = last && typeof last.limit === "number" ? String(last.limit) : "";
    if (last && typeof last.limit === "number") {
      ctx.fillStyle = color("--limit");
      ctx.textAlign = "right"; ctx.textBaseline = "bottom";
      ctx.fillText(`limit ${last.limit.toFixed(1)} kW`, w - m.r - 2, y(last.limit) - 3);
    }
  }

  // Event log -----------------------------------------------------------------------------------
  function describe(kind, data, stationId) {
    const d = data || {};
    const where = stationId ? `${stationId}${d.evse_id != null ? "/" + d.evse_id : ""}` : "";
    switch (kind) {
      case "grid.limit": return `${d.transformer_id || d.transformer || ""}: ${kw(d.limit_kw)} (${d.source || "?"})`;
      case "grid.safe_mode": return `${d.transformer_id || ""}: safe mode ${d.on ? "ON" : "off"}${d.reason ? " – " + d.reason : ""}`;
      case "grid.signal_rejected": return `${d.transformer_id || ""}: ${d.reason || "rejected"}`;
      case "grid.push": return `${where} ${d.status}${d.limit != null ? ` · ${d.limit} ${d.unit || ""}` : ""}` +
        (d.trigger ? ` (${d.trigger})` : "");
      case "grid.plan": return Object.entries(d).filter(([, v]) => typeof v !== "object").slice(0, 5)
        .map(([k, v]) => `${k}=${typeof v === "number" ? +v.toFixed(3) : v}`).join(" ");
      case "station.connected": return `${where} connected${d.subprotocol ? " (" + d.subprotocol + ")" : ""}`;
      case "transaction.started": case "transaction.ended":
        return `${where} ${d.transaction_id || ""}${d.stopped_reason ? " (" + d.stopped_reason + ")" : ""}`;
      default:
        return (where ? where + " " : "") + Object.entries(d).filter(([, v]) => v !== null && typeof v !== "object")
          .slice(0, 4).map(([k, v]) => `${k}=${v}`).join(" ");
    }
  }

  function kindClass(kind) {
    if (kind.includes("rejected")) return "kind-rejected";
    if (kind.includes("safe")) return "kind-safe";
    if (kind.includes("limit")) return "kind-limit";
    if (kind.includes("push")) return "kind-push";
    if (kind.includes("plan")) return "kind-plan";
    return "";
  }

  function logEvent(kind, at, data, stationId) {
    const list = $("event-log");
    const item = el("li", { "data-kind": kind },
      el("span", { class: "at" }, hhmmss(at)),
      el("span", { class: `kind ${kindClass(kind)}` }, kind),
      el("span", { class: "what" }, describe(kind, data, stationId)));
    list.prepend(item);
    while (list.children.length > MAX_LOG) list.lastChild.remove();
  }

  async function loadHistory() {
    try {
      const { events } = await api("/api/grid/events?limit=30");
      for (const e of events) logEvent("grid." + e.kind, e.at, e, e.station_id);
    } catch (e) {
      if (e instanceof AuthError) throw e;  // other failures: the live stream still works
    }
  }

  // Live stream (fetch + ReadableStream, so the token goes in a header, never in a URL) ----------
  function setStreamState(text, cls) {
    const pill = $("stream-state");
    pill.textContent = text;
    pill.className = `pill ${cls}`;
  }

  function stopStream() {
    if (state.streamAbort) state.streamAbort.abort();
    state.streamAbort = null;
  }

  async function stream() {
    stopStream();
    const abort = new AbortController();
    state.streamAbort = abort;
    setStreamState("connecting", "pill-wait");
    try {
      const response = await fetch("/api/events", {
        headers: { Authorization: "Bearer " + state.token, Accept: "text/event-stream" }, signal: abort.signal });
      if (response.status === 401 || response.status === 403) return showLogin("the token was refused");
      if (!response.ok || !response.body) throw new Error(`HTTP ${response.status}`);
      setStreamState("live", "pill-on");
      state.streamRetryMs = 1000;
      scheduleRefresh(0);
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let cut;
        while ((cut = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, cut);
          buffer = buffer.slice(cut + 2);
          const data = block.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trim()).join("\n");
          if (data) onEvent(JSON.parse(data));
        }
      }
    } catch (e) {
      if (abort.signal.aborted) return;
    }
    if (state.streamAbort !== abort) return;
    setStreamState("reconnecting", "pill-off");
    setTimeout(() => { if (state.streamAbort === abort) stream(); }, state.streamRetryMs);
    state.streamRetryMs = Math.min(state.streamRetryMs * 2, 30000);
  }

  function onEvent(ev) {
    if (LOGGED.some((p) => ev.kind.startsWith(p)) && ev.kind !== "grid.plan") {
      logEvent(ev.kind, ev.at, ev.data, ev.station_id);
    }
    if (REFRESHING.some((p) => ev.kind.startsWith(p))) scheduleRefresh();
  }

  // Start ---------------------------------------------------------------------------------------
  async function start() {
    state.token = sessionStorage.getItem(TOKEN_KEY);
    if (!state.token) return showLogin("");
    $("login").hidden = true;
    $("main").hidden = false;
    $("logout").hidden = false;
    try {
      await loadHistory();
    } catch (e) {
      sessionStorage.removeItem(TOKEN_KEY);
      return showLogin(e.message);
    }
    await refresh();
    stream();
  }

  $("login-form").addEventListener("submit", (e) => {
    e.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, $("token-input").value.trim());
    $("token-input").value = "";
    start();
  });
  $("logout").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    state.token = null;
    showLogin("");
  });
  setInterval(() => { $("clock").textContent = new Date().toLocaleTimeString([], { hour12: false }); }, 1000);

  takeTokenFromUrl();
  start();
})();
