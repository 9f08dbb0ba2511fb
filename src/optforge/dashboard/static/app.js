// optforge dashboard: polls /api/journal/<i> every 2 s and redraws what changed.
// Text from journals is always set with textContent (never parsed as HTML).
"use strict";

const POLL_MS = 2000;
const views = new Map(); // index -> {version, data, selected, nodes}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children) if (child != null) node.append(child);
  return node;
}

const fmt = (x, digits = 4) => (x == null ? "–" : Number(x).toFixed(digits));
const pct = (x) => (x == null ? "–" : `${(100 * x).toFixed(1)}%`);
const score = (s) => (!s ? "" : s.mean == null ? "failed" :
  `${fmt(s.mean)}${s.std == null ? "" : " ± " + fmt(s.std)}`);

function duration(seconds) {
  if (seconds == null) return "–";
  const s = Math.round(seconds), h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60);
  return h ? `${h} h ${m} min` : m ? `${m} min ${s % 60} s` : `${s} s`;
}

async function getJSON(url) {
  const response = await fetch(url, { cache: "no-store" });
  const body = await response.json();
  if (!response.ok) throw new Error(body.error || `${response.status}`);
  return body;
}

// -- one journal's section ---------------------------------------------------------------------

function section(head) {
  const nodes = {};
  nodes.badge = el("span", { class: "badge", text: "…" });
  nodes.phase = el("span", { class: "muted phase" });
  nodes.error = el("div", { class: "error journal-error", hidden: "" });
  nodes.status = el("dl", { class: "status" });
  nodes.plot = el("div", { class: "plot" });
  nodes.board = el("tbody");
  nodes.program = el("div", { class: "program" },
    el("p", { class: "muted", text: "Select a program: click a point or a leaderboard row." }));
  nodes.tables = el("div", { class: "tables" });
  nodes.body = el("div", { class: "body", hidden: "" },
    nodes.status, nodes.plot,
    el("div", { class: "columns" },
      el("div", {}, el("h3", { text: "leaderboard (distinct behaviours)" }),
        el("div", { class: "leaderboard" }, el("table", {},
          el("thead", {}, el("tr", {}, el("th", { class: "num", text: "#" }),
            el("th", { class: "num", text: "candidate" }), el("th", { class: "num", text: "fitness" }),
            el("th", { text: "program (live statements)" }))),
          nodes.board))),
      el("div", {}, el("h3", { text: "selected program" }), nodes.program)),
    nodes.tables);
  nodes.root = el("section", { class: "journal", id: `journal-${head.index}`,
    "data-journal": String(head.index) },
    el("div", { class: "journal-head" }, el("h2", { text: head.name, title: head.path }),
      nodes.badge, nodes.phase),
    nodes.error, nodes.body);
  document.getElementById("journals").append(nodes.root);
  nodes.overview = el("tr", { "data-journal": String(head.index) });
  document.getElementById("overview-rows").append(nodes.overview);
  return nodes;
}

function renderError(view, body) {
  const n = view.nodes;
  n.badge.className = "badge error";
  n.badge.textContent = "cannot read";
  n.phase.textContent = "";
  n.error.textContent = body.error;
  n.error.hidden = false;
  n.body.hidden = true;
  view.version = null;
  overviewRow(view, body, null);
}

function renderPhase(view, phase) {
  const n = view.nodes;
  n.badge.className = `badge ${phase.state}`;
  n.badge.textContent = phase.state;
  const idle = phase.idle == null ? "" : ` · last write ${duration(phase.idle)} ago`;
  n.phase.textContent = phase.label + idle;
}

function render(view, body) {
  const n = view.nodes;
  n.error.hidden = true;
  n.body.hidden = false;
  renderPhase(view, body.phase);
  if (body.status) { // a new snapshot (else only the clock moved)
    view.data = body;
    renderStatus(view, body.status);
    renderPlot(view, body);
    renderBoard(view, body.leaderboard);
    renderTables(view, body);
    if (view.selected != null) select(view, view.selected, false);
  }
  overviewRow(view, body, view.data);
}

function renderStatus(view, s) {
  const failures = Object.entries(s.failures).map(([k, v]) => `${k} ×${v}`).join(", ");
  const items = [
    ["task", s.task], ["fitness", s.fitness], ["algorithm", `${s.algorithm} (${s.language})`],
    ["seed", s.seed],
    ["generated", s.budget == null ? `${s.generated}` : `${s.generated} / ${s.budget}`, "generated"],
    ["trained", s.trained, "trained"],
    ["rate", `${fmt(s.per_second, 2)} generated/s, ${fmt(s.trained_per_second, 2)} trained/s`],
    ["cache hit rate", pct(s.hit_rate)], ["redundant statements", pct(s.redundant_fraction)],
    ["elapsed (searching)", duration(s.elapsed)], ["best fitness", fmt(s.best_fitness), "best"],
    ["population · batch · workers", `${s.population} · ${s.batch} · ${s.workers}`],
    ["restarts", s.restarts], ["failures", failures || "none"],
  ];
  view.nodes.status.replaceChildren(...items.map(([k, v, cls]) =>
    el("div", {}, el("dt", { text: k }), el("dd", { class: cls || "", text: String(v) }))));
}

const COLORS = { torch_adamw: "#ea580c", adamw: "#dc2626", lion: "#16a34a", muon: "#9333ea" };

function renderPlot(view, body) {
  if (typeof Plotly === "undefined") return;
  const p = body.plot, pts = p.points, n = Math.max(1, body.status.generated);
  const trained = { x: [], y: [], id: [] }, cached = { x: [], y: [], id: [] };
  pts.x.forEach((x, i) => {
    const into = pts.cached[i] ? cached : trained;
    into.x.push(x); into.y.push(pts.y[i]); into.id.push(pts.id[i]);
  });
  // SVG below 5,000 points (works everywhere, headless browsers included), WebGL above it.
  const kind = pts.x.length + p.failed.x.length > 5000 ? "scattergl" : "scatter";
  const hover = "candidate %{customdata}<br>fitness %{y:.4f}<extra>%{fullData.name}</extra>";
  const traces = [
    { name: "trained", x: trained.x, y: trained.y, customdata: trained.id, type: kind,
      mode: "markers", marker: { size: 5, color: "#2563eb", opacity: 0.45 }, hovertemplate: hover },
    { name: "cache hit", x: cached.x, y: cached.y, customdata: cached.id, type: kind,
      mode: "markers", marker: { size: 5, color: "#94a3b8", opacity: 0.6, symbol: "diamond" },
      hovertemplate: hover },
    { name: "best so far", x: pts.x, y: p.best, type: "scatter", mode: "lines",
      line: { color: "#1e3a8a", width: 2, shape: "hv" }, hoverinfo: "skip" },
    { name: `failed (${p.failed.x.length})`, x: p.failed.x, y: p.failed.x.map(() => 0),
      customdata: p.failed.id, text: p.failed.reason, yaxis: "y2", type: kind,
      mode: "markers", marker: { size: 6, color: "#b91c1c", symbol: "x" },
      hovertemplate: "candidate %{customdata}<br>%{text}<extra>failed</extra>" },
  ];
  if (p.warm_start != null) traces.push({ name: "warm start", x: [0, n], y: [p.warm_start, p.warm_start],
    mode: "lines", line: { color: "#6b7280", dash: "dot" }, hoverinfo: "name+y" });
  for (const [name, value] of Object.entries(p.baselines)) traces.push({ name: `tuned ${name}`,
    x: [0, n], y: [value, value], mode: "lines", hoverinfo: "name+y",
    line: { color: COLORS[name] || "#000", dash: "dash", width: 1.5 } });
  const below = p.yrange ? pts.y.filter((y) => y < p.yrange[0]).length : 0;
  const layout = {
    uirevision: `journal-${body.index}`, margin: { l: 60, r: 10, t: 10, b: 40 },
    xaxis: { title: { text: "candidate (generated, in order)" }, anchor: "y2", rangemode: "tozero" },
    yaxis: { title: { text: `fitness on ${p.task}` }, domain: [0.14, 1], range: p.yrange || undefined,
      autorange: p.yrange ? false : true },
    yaxis2: { domain: [0, 0.07], showticklabels: false, range: [-1, 1], fixedrange: true,
      title: { text: "failed", font: { size: 10 } }, zeroline: false, showgrid: false },
    legend: { orientation: "h", y: 1.02, yanchor: "bottom", font: { size: 11 } },
    annotations: below ? [{ text: `${below} below this view (autoscale, ⤢, shows them)`,
      xref: "paper", yref: "paper", x: 1, y: 0.075, xanchor: "right", yanchor: "bottom",
      showarrow: false, font: { size: 11, color: "#6b7280" } }] : [],
    hovermode: "closest",
  };
  Plotly.react(view.nodes.plot, traces, layout, { displaylogo: false, responsive: true });
  if (!view.plotSized) { // the first draw can precede layout: fit the container once it has one
    view.plotSized = true;
    requestAnimationFrame(() => Plotly.Plots.resize(view.nodes.plot));
  }
  if (!view.plotWired) {
    view.plotWired = true;
    view.nodes.plot.on("plotly_click", (event) => {
      const point = event.points && event.points[0];
      if (point && point.customdata != null) select(view, point.customdata, true);
    });
  }
}

function renderBoard(view, rows) {
  view.nodes.board.replaceChildren(...rows.map((r) => el("tr",
    { "data-candidate": String(r.id), class: r.id === view.selected ? "selected" : "",
      onclick: () => select(view, r.id, true) },
    el("td", { class: "num", text: String(r.rank) }), el("td", { class: "num", text: String(r.id) }),
    el("td", { class: "num", text: fmt(r.fitness) }),
    el("td", { class: "code", text: r.program, title: r.program }))));
  if (!rows.length) view.nodes.board.append(el("tr", {}, el("td", { colspan: "4", class: "muted",
    text: "no program scored yet" })));
}

function renderTables(view, body) {
  const parts = [];
  if (body.funnel.length) {
    parts.push(el("h3", { text: "funnel" }), el("table", { class: "funnel" },
      el("thead", {}, el("tr", {}, el("th", { text: "stage task" }), el("th", { text: "cleared the bar" }),
        el("th", { text: "went on (candidates)" }))),
      el("tbody", {}, ...body.funnel.map((f) => el("tr", {}, el("td", { text: f.task }),
        el("td", { text: (f.passed || []).length ? f.passed.join(", ") : "none" }),
        el("td", { text: (f.went_on || []).join(", ") }))))));
  }
  if (body.finalists.length) {
    parts.push(el("h3", { text: "finalists" }), el("table", {},
      el("thead", {}, el("tr", {}, el("th", { text: "#" }), el("th", { text: "candidate" }),
        el("th", { text: "simplified as" }), el("th", { text: "" }))),
      el("tbody", {}, ...body.finalists.map((f, i) => el("tr", {},
        el("td", { text: String(i + 1) }),
        el("td", {}, el("button", { class: "link", text: String(f.candidate),
          onclick: () => select(view, f.candidate, true) })),
        el("td", {}, el("button", { class: "link", text: String(f.simplified),
          onclick: () => select(view, f.simplified, true) })),
        el("td", { class: "muted", text: f.below ? "below the best tuned baseline" : "" }))))));
  }
  if (body.meta.rows.length) {
    parts.push(el("h3", { text: `meta-validation over seeds ${body.meta.seeds.join(", ")}` }),
      el("table", { class: "meta" },
        el("thead", {}, el("tr", {}, el("th", { text: "task" }), el("th", { text: "program" }),
          el("th", { class: "num", text: "fitness (mean ± std)" }),
          el("th", { class: "num", text: "simplified" }))),
        el("tbody", {}, ...body.meta.rows.map((r) => el("tr", {}, el("td", { text: r.task }),
          el("td", { text: r.program }), el("td", { class: "num", text: score(r.fitness) }),
          el("td", { class: "num", text: score(r.simplified) }))))));
  }
  view.nodes.tables.replaceChildren(...parts);
}

function overviewRow(view, body, data) {
  const s = data && data.status, phase = body.phase;
  const cells = s ? [s.task, s.algorithm, String(s.seed), String(s.generated), fmt(s.best_fitness),
    fmt(s.per_second, 2)] : ["", "", "", "", "", ""];
  view.nodes.overview.replaceChildren(
    el("td", { text: String(body.index) }),
    el("td", {}, el("a", { href: `#journal-${body.index}`, text: body.name, title: body.path })),
    el("td", { class: body.ok === false ? "error-cell" : "", text: body.ok === false ?
      `error: ${body.error}` : phase ? phase.state : "…" }),
    ...cells.map((c, i) => el("td", { class: i >= 3 ? "num" : "", text: c })));
}

// -- the selected program ----------------------------------------------------------------------

function diffBlock(text) {
  return el("pre", { class: "diff" }, ...text.split("\n").map((line) => el("span", {
    class: line.startsWith("@@") ? "hunk" : line.startsWith("+") ? "add" : line.startsWith("-") ? "del" : "",
    text: line + "\n" })));
}

async function select(view, id, scroll) {
  view.selected = id;
  for (const row of view.nodes.board.children)
    row.classList.toggle("selected", row.dataset.candidate === String(id));
  let c;
  try {
    c = await getJSON(`/api/journal/${view.index}/candidate/${id}`);
  } catch (error) {
    view.nodes.program.replaceChildren(el("div", { class: "error", text: String(error.message) }));
    return;
  }
  if (view.selected !== id) return; // another click came first
  const facts = [`${c.kind}${c.name ? " " + c.name : ""}`, `generation ${c.generation}`,
    `status ${c.status}`, `fitness ${fmt(c.fitness)}`,
    c.multiplier && c.multiplier !== 1 ? `step-size multiplier ×${c.multiplier} (folded in)` : null,
    c.cache_of != null ? `cache hit of ${c.cache_of}` : null,
    c.redundant ? `${c.redundant} of ${c.statements} statements redundant` : null,
    c.reason ? `reason: ${c.reason}` : null].filter(Boolean).join(" · ");
  const parts = [
    el("h2", { class: "candidate-title", text: `candidate ${c.id}` }),
    el("p", { class: "facts muted", text: facts }),
    c.mutation ? el("p", { class: "mutation", text: `mutation: ${c.mutation}` }) : null,
    el("h3", { text: "source (as scored)" }), el("pre", { class: "source", text: c.source }),
  ];
  if (c.simplified && c.simplified !== c.source)
    parts.push(el("h3", { text: "simplified" }), el("pre", { class: "simplified", text: c.simplified }));
  if (c.diff) parts.push(el("h3", { text: `diff against its parent ${c.parent}` }), diffBlock(c.diff));
  parts.push(el("h3", { text: `lineage (${c.lineage.length} steps from the warm start)` }),
    el("table", { class: "lineage" },
      el("thead", {}, el("tr", {}, el("th", { class: "num", text: "candidate" }),
        el("th", { class: "num", text: "fitness" }), el("th", { text: "mutation" }))),
      el("tbody", {}, ...c.lineage.map((step) => el("tr",
        { "data-candidate": String(step.id), class: step.id === c.id ? "selected" : "",
          onclick: () => select(view, step.id, false) },
        el("td", { class: "num", text: String(step.id) }), el("td", { class: "num", text: fmt(step.fitness) }),
        el("td", { class: "code", text: step.mutation || "warm start", title: step.mutation || "" }))))));
  view.nodes.program.replaceChildren(...parts.filter(Boolean));
  if (scroll) view.nodes.program.scrollIntoView({ block: "nearest", behavior: "smooth" });
}

// -- polling -----------------------------------------------------------------------------------

async function poll(view) {
  const v = view.version == null ? "" : `?v=${view.version}`;
  const body = await getJSON(`/api/journal/${view.index}${v}`);
  if (!body.ok) return renderError(view, body);
  view.version = body.version;
  render(view, body); // body.status is there only when the journal changed
}

async function tick() {
  const connection = document.getElementById("connection");
  try {
    await Promise.all([...views.values()].map((view) => poll(view).catch((error) => {
      if (error instanceof TypeError) throw error; // the server is gone
      renderError(view, { ...view.head, ok: false, error: error.message });
    })));
    connection.textContent = `updated ${new Date().toLocaleTimeString()}`;
    connection.className = "muted";
  } catch (error) {
    connection.textContent = "the dashboard server is not reachable (stopped?); retrying";
    connection.className = "error";
  }
  setTimeout(tick, POLL_MS);
}

async function start() {
  const heads = await getJSON("/api/journals");
  for (const head of heads) views.set(head.index, { index: head.index, head, version: null,
    data: null, selected: null, nodes: section(head) });
  tick();
}

window.addEventListener("DOMContentLoaded", () => start().catch((error) => {
  document.getElementById("connection").textContent = `cannot start: ${error.message}`;
}));
