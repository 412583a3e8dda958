import { ApiError, call, enc } from "../api.ts";
import { chart } from "../charts.ts";
import { headline, placeOf } from "../diagnostics.ts";
import { append, button, clear, field, h, visible } from "../dom.ts";
import { folderFiles, tarOf } from "../tar.ts";
import { alertBox, busy, describe } from "../ui.ts";
import { rerender } from "../nav.ts";
import { diffView, showDiagnostics, sourceEditor } from "./editor.ts";
import type { EditorView } from "codemirror";

const TEMPLATE = `export default {
  fetch(req: Request): Response {
    const url = new URL(req.url);
    return Response.json({ hello: "world", path: url.pathname });
  },
};
`;

// deno-lint-ignore no-explicit-any
type Json = any;

interface Ctx {
  name: string;
  base: string;
  info: Json | null;
  header: HTMLElement;
  reload: () => Promise<void>;
  /** Stops timers when the page is left. */
  cleanups: Array<() => void>;
}

/** Whether the page is drawn for an arrow key on the tabs. */
let keyboardTab = false;

const TABS = ["Code", "Try it", "Versions", "Config", "Logs", "Metrics"] as const;
type Tab = typeof TABS[number];

/** One function: its code, calls, versions, config, logs and charts. */
export async function functionPage(root: HTMLElement, name: string, tab: string): Promise<() => void> {
  const base = `/func/${enc(name)}`;
  const header = h("div", { class: "fn-head" });
  const main = h("main", { class: "page" }, header);
  root.append(main);
  const ctx: Ctx = { name, base, info: null, header, reload: async () => {}, cleanups: [] };
  ctx.reload = async () => {
    try {
      ctx.info = (await call("GET", base)).json;
    } catch (e) {
      if (!(e instanceof ApiError && e.status === 404)) throw e;
      ctx.info = null;
    }
    renderHeader(ctx);
  };
  try {
    await ctx.reload();
  } catch (e) {
    header.append(h("h1", { text: name }));
    main.append(alertBox(describe(e)));
    return () => {};
  }
  const current: Tab = (TABS as readonly string[]).includes(tab) ? tab as Tab : "Code";
  const tabList = h("div", { role: "tablist", class: "tabs", "aria-label": "Function sections" });
  const panel = h("section", { role: "tabpanel", class: "panel", tabindex: "-1" });
  main.append(tabList, panel);
  const buttons = TABS.map((t) => {
    const b = h("button", {
      type: "button",
      role: "tab",
      id: `tab-${slug(t)}`,
      "aria-selected": String(t === current),
      tabindex: t === current ? "0" : "-1",
      text: t,
    });
    b.addEventListener("click", () => {
      location.hash = `#/fn/${name}/${slug(t)}`;
    });
    b.addEventListener("keydown", (ev) => {
      const i = TABS.indexOf(t);
      const to = ev.key === "ArrowRight"
        ? (i + 1) % TABS.length
        : ev.key === "ArrowLeft"
        ? (i + TABS.length - 1) % TABS.length
        : -1;
      if (to >= 0) {
        ev.preventDefault();
        keyboardTab = true;
        location.hash = `#/fn/${name}/${slug(TABS[to])}`;
      }
    });
    return b;
  });
  tabList.append(...buttons);
  if (keyboardTab) {
    // Arrow keys move along the tabs: the new one keeps the focus.
    keyboardTab = false;
    buttons[TABS.indexOf(current)].focus();
  }
  panel.setAttribute("aria-labelledby", `tab-${slug(current)}`);
  if (!ctx.info && current !== "Code") {
    panel.append(h("p", { text: "This function is not deployed yet: write it in Code and deploy it." }));
  } else {
    await PANELS[current](panel, ctx);
  }
  return () => ctx.cleanups.forEach((c) => c());
}

export function slug(t: string): string {
  return t.toLowerCase().replace(/\s+/g, "-");
}

export function tabOfSlug(s: string): string {
  return TABS.find((t) => slug(t) === s) ?? "Code";
}

function renderHeader(ctx: Ctx): void {
  clear(ctx.header);
  const info = ctx.info;
  append(
    ctx.header,
    h("p", { class: "crumbs" }, h("a", { href: "#/", text: "Functions" }), " / "),
    h("h1", { text: ctx.name }),
  );
  if (!info) {
    ctx.header.append(h("p", { class: "muted", text: "Not deployed yet." }));
    return;
  }
  const rt = info.runtime;
  ctx.header.append(
    h(
      "dl",
      { class: "facts" },
      h("dt", { text: "Live version" }),
      h("dd", { class: "live-version", text: `v${info.version}` }),
      h("dt", { text: "State" }),
      h("dd", { text: rt ? String(rt.state) : "deployed" }),
      h("dt", { text: "URL" }),
      h(
        "dd",
        {},
        h("a", {
          href: String(info.url),
          target: "_blank",
          rel: "noopener noreferrer",
          class: "fn-url",
          text: String(info.url),
        }),
      ),
    ),
  );
}

const PANELS: Record<Tab, (p: HTMLElement, c: Ctx) => Promise<void> | void> = {
  "Code": codePanel,
  "Try it": tryPanel,
  "Versions": versionsPanel,
  "Config": configPanel,
  "Logs": logsPanel,
  "Metrics": metricsPanel,
};

async function codePanel(panel: HTMLElement, ctx: Ctx): Promise<void> {
  const source = ctx.info ? (await call("GET", `${ctx.base}/code`)).text : TEMPLATE;
  const box = h("div", { class: "editor" });
  const status = h("div", { class: "status", role: "status", "aria-live": "polite" });
  const diags = h("ul", { class: "diagnostics", "aria-label": "Deploy diagnostics" });
  const strict = h("input", { type: "checkbox", id: "strict" });
  const file = h("input", { type: "file", accept: ".ts,.js,.mts,.mjs,.tsx,.jsx,.tar,.tgz,.gz,.zip" });
  const folder = h("input", { type: "file", webkitdirectory: true, multiple: true });
  const actions = h("div", { class: "row actions" });
  panel.append(
    h("h2", { class: "sr-only", text: "Code" }),
    box,
    actions,
    status,
    diags,
  );
  const view: EditorView = sourceEditor(box, source, `Source of ${ctx.name}`);
  const deploy = async (body: BodyInit, type: string, what: string) => {
    clear(diags);
    showDiagnostics(view, []);
    const q = `/func?name=${enc(ctx.name)}${strict.checked ? "&check=strict" : ""}`;
    await busy(status, `Deploying ${what}: resolving imports, type checking, bundling…`, async () => {
      let a;
      try {
        a = await call("POST", q, body, type);
      } catch (e) {
        if (e instanceof ApiError && e.status === 400) {
          listDiagnostics(diags, view, [{ text: e.message, severity: "error" }]);
        }
        throw e;
      }
      const warnings: string[] = a.json.warnings ?? [];
      listDiagnostics(diags, view, warnings.map((text) => ({ text, severity: "warning" as const })));
      await ctx.reload();
      return `Deployed version ${a.json.version}` +
        (warnings.length ? ` with ${warnings.length} warning${warnings.length > 1 ? "s" : ""}.` : ".");
    }, actions);
  };
  actions.append(
    button("Deploy", () => deploy(view.state.doc.toString(), "application/typescript", "the editor's code"), {
      class: "primary",
      id: "deploy",
    }),
    h("label", { class: "check" }, strict, " Refuse type errors"),
    field("Upload a file or archive", file),
    field("Upload a folder", folder),
  );
  file.addEventListener("change", () => {
    const f = file.files?.[0];
    if (!f) return;
    const archive = /\.(tar|tgz|gz|zip)$/.test(f.name);
    const type = f.name.endsWith(".zip")
      ? "application/zip"
      : f.name.endsWith(".tar")
      ? "application/x-tar"
      : archive
      ? "application/gzip"
      : "application/typescript";
    if (!archive) {
      f.text().then((t) => view.dispatch({ changes: { from: 0, to: view.state.doc.length, insert: t } }));
    }
    deploy(f, type, f.name);
  });
  folder.addEventListener("change", async () => {
    if (!folder.files?.length) return;
    const files = folderFiles(folder.files);
    deploy(await tarOf(files), "application/x-tar", `a folder of ${files.length} files`);
  });
}

function listDiagnostics(
  list: HTMLElement,
  view: EditorView,
  items: Array<{ text: string; severity: "warning" | "error" }>,
): void {
  showDiagnostics(view, items);
  clear(list);
  for (const d of items) {
    const at = placeOf(d.text);
    const where = at ? `line ${at.line}` : "";
    const li = h(
      "li",
      { class: `diag ${d.severity}` },
      h("strong", { text: `${d.severity}${where ? " at " + where : ""}: ` }),
      h("span", { text: visible(headline(d.text)) }),
      h("details", {}, h("summary", { text: "Full text" }), h("pre", { text: visible(d.text) })),
    );
    if (at) {
      li.dataset.line = String(at.line);
      li.append(button(`Go to line ${at.line}`, () => {
        const line = view.state.doc.line(Math.min(at.line, view.state.doc.lines));
        view.dispatch({ selection: { anchor: line.from }, scrollIntoView: true });
        view.focus();
      }, { class: "link" }));
    }
    list.append(li);
  }
}

function tryPanel(panel: HTMLElement, ctx: Ctx): void {
  const method = h(
    "select",
    { name: "method" },
    ...["GET", "POST", "PUT", "PATCH", "DELETE"].map((m) => h("option", { text: m })),
  );
  const path = h("input", { name: "path", value: "/", placeholder: "/" });
  const headers = h("textarea", { name: "headers", rows: 2, placeholder: "Content-Type: application/json" });
  const body = h("textarea", { name: "body", rows: 4 });
  const out = h("div", { class: "response", "aria-live": "polite" });
  const status = h("div", { class: "status", role: "status" });
  const form = h(
    "form",
    { class: "try", "aria-label": "Try the function" },
    h("h2", { text: "Try it" }),
    h(
      "p",
      { class: "muted" },
      "Calls ",
      h("code", { text: String(ctx.info.url) }),
      " from this browser, without any credentials.",
    ),
    h("div", { class: "row" }, field("Method", method), field("Path", path)),
    field("Headers", headers, "One per line: Name: value"),
    field("Body", body),
    h("button", { type: "submit", class: "primary", id: "send", text: "Send" }),
    status,
  );
  panel.append(h("div", { class: "try-grid" }, form, out));
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    busy(status, "Calling…", async () => {
      const hs = new Headers();
      for (const line of headers.value.split("\n")) {
        const i = line.indexOf(":");
        if (i > 0) hs.append(line.slice(0, i).trim(), line.slice(i + 1).trim());
      }
      const p = path.value.startsWith("/") ? path.value : "/" + path.value;
      const started = performance.now();
      let res: Response;
      try {
        res = await fetch(String(ctx.info.url) + (p === "/" ? "" : p), {
          method: method.value,
          headers: hs,
          body: ["GET", "HEAD"].includes(method.value) ? undefined : body.value,
          credentials: "omit",
          mode: "cors",
          cache: "no-store",
        });
      } catch (e) {
        throw new Error(
          `the browser could not read the answer (${
            String(e)
          }): is the router reachable and does it allow this console's origin?`,
        );
      }
      const text = await res.text();
      const ms = performance.now() - started;
      clear(out);
      const lines = Array.from(res.headers.entries()).map(([k, v]) => `${k}: ${v}`).join("\n");
      out.append(
        h(
          "h3",
          {},
          "Response ",
          h("span", {
            class: `code s${Math.floor(res.status / 100)}`,
            id: "try-status",
            text: String(res.status),
          }),
          h("span", { class: "muted", text: ` in ${ms.toFixed(0)} ms` }),
        ),
        h("pre", { class: "resp-headers", text: visible(lines) }),
        h("pre", { class: "resp-body", id: "try-body", text: visible(text) }),
      );
    }, form);
  });
}

function versionsPanel(panel: HTMLElement, ctx: Ctx): void {
  const info = ctx.info;
  const versions: Json[] = info.versions ?? [];
  const status = h("div", { class: "status", role: "status", "aria-live": "polite" });
  const body = h("tbody");
  for (const v of [...versions].reverse()) {
    body.append(h(
      "tr",
      { class: v.live ? "live" : "" },
      h("th", { scope: "row", text: `v${v.version}` }),
      h("td", { text: new Date(v.created_at).toLocaleString() }),
      h("td", { text: `${v.size} B` }),
      h("td", { class: "mono", text: String(v.sha256).slice(0, 12) }),
      h(
        "td",
        {},
        v.live ? h("span", { class: "badge", text: "live" }) : button(`Roll back to v${v.version}`, () => {
          busy(status, `Rolling back to v${v.version}…`, async () => {
            await call("POST", `${ctx.base}/rollback?version=${v.version}`);
            rerender();
          }, panel);
        }, { class: "rollback", "data-version": String(v.version) }),
      ),
    ));
  }
  const opts = () => versions.map((v) => h("option", { value: String(v.version), text: `v${v.version}` }));
  const a = h("select", { name: "from" }, ...opts());
  const b = h("select", { name: "to" }, ...opts());
  if (versions.length > 1) a.value = String(versions[versions.length - 2].version);
  if (versions.length > 0) b.value = String(versions[versions.length - 1].version);
  const diffBox = h("div", { class: "editor diff", id: "diff" });
  const diffForm = h(
    "form",
    { class: "row", "aria-label": "Compare versions" },
    field("From", a),
    field("To", b),
    h("button", { type: "submit", id: "show-diff", text: "Show diff" }),
  );
  let view: EditorView | null = null;
  diffForm.addEventListener("submit", (ev) => {
    ev.preventDefault();
    busy(status, "Loading both versions…", async () => {
      const [x, y] = await Promise.all([
        call("GET", `${ctx.base}/versions/${enc(a.value)}/code`),
        call("GET", `${ctx.base}/versions/${enc(b.value)}/code`),
      ]);
      view?.destroy();
      clear(diffBox);
      diffBox.append(h("p", { class: "muted", text: `Changes from v${a.value} to v${b.value}` }));
      view = diffView(diffBox, x.text, y.text, `Diff of v${a.value} and v${b.value}`);
    });
  });
  panel.append(
    h("h2", { text: "Versions" }),
    h(
      "div",
      { class: "table-wrap" },
      h(
        "table",
        {},
        h(
          "thead",
          {},
          h(
            "tr",
            {},
            ...["Version", "Created", "Size", "SHA-256", ""].map((t) => h("th", { scope: "col", text: t })),
          ),
        ),
        body,
      ),
    ),
    status,
    h("h2", { text: "Diff" }),
    diffForm,
    diffBox,
  );
}

async function configPanel(panel: HTMLElement, ctx: Ctx): Promise<void> {
  const cfg = (await call("GET", `${ctx.base}/config`)).json;
  const status = h("div", { class: "status", role: "status", "aria-live": "polite" });
  const rows = h("tbody");
  const original = new Set(Object.keys(cfg.env ?? {}));
  const addRow = (k: string, v: string) => {
    const key = h("input", { value: k, "aria-label": "Name", class: "env-key", placeholder: "NAME" });
    const val = h("input", {
      value: v,
      "aria-label": `Value of ${k || "the new variable"}`,
      class: "env-value",
    });
    const tr = h("tr", {}, h("td", {}, key), h("td", {}, val));
    tr.append(
      h("td", {}, button("Remove", () => tr.remove(), { "aria-label": `Remove ${k || "this variable"}` })),
    );
    rows.append(tr);
  };
  for (const [k, v] of Object.entries(cfg.env ?? {})) addRow(k, String(v));
  const envForm = h(
    "form",
    { "aria-label": "Environment" },
    h("h2", { text: "Environment" }),
    h(
      "table",
      { class: "env" },
      h("thead", {}, h("tr", {}, h("th", { text: "Name" }), h("th", { text: "Value" }), h("th"))),
      rows,
    ),
    h(
      "div",
      { class: "row" },
      button("Add variable", () => addRow("", "")),
      h("button", { type: "submit", class: "primary", text: "Save environment" }),
    ),
  );
  envForm.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const env: Record<string, string | null> = {};
    for (const tr of Array.from(rows.rows)) {
      const [k, v] = Array.from(tr.querySelectorAll("input")).map((i) => i.value);
      if (k) env[k.trim()] = v;
    }
    for (const k of original) if (!(k in env)) env[k] = null;
    busy(status, "Saving the environment (a new version)…", async () => {
      await call("PATCH", `${ctx.base}/config`, JSON.stringify({ env }), "application/json");
      await ctx.reload();
      return `Saved: now v${ctx.info.version}.`;
    }, envForm);
  });
  const secrets = h("ul", { class: "secrets" });
  for (const k of cfg.secrets ?? []) {
    secrets.append(
      h(
        "li",
        {},
        h("code", { text: String(k) }),
        h("span", { class: "muted", text: " •••••• (write-only) " }),
        button("Remove", () => {
          busy(status, `Removing ${k}…`, async () => {
            await call("DELETE", `${ctx.base}/secrets/${enc(String(k))}`);
            rerender();
          });
        }, { "aria-label": `Remove secret ${k}` }),
      ),
    );
  }
  if (!cfg.secrets?.length) secrets.append(h("li", { class: "muted", text: "No secrets." }));
  const sKey = h("input", { name: "secret-name", placeholder: "API_TOKEN", required: true });
  const sVal = h("input", { name: "secret-value", type: "password", autocomplete: "off", required: true });
  const secretForm = h(
    "form",
    { "aria-label": "Secrets" },
    h("h2", { text: "Secrets" }),
    h("p", {
      class: "muted",
      text: "Values are encrypted at rest and never shown again: set a new value to change one.",
    }),
    secrets,
    h(
      "div",
      { class: "row" },
      field("Secret name", sKey),
      field("Value", sVal),
      h("button", { type: "submit", class: "primary", text: "Set secret" }),
    ),
  );
  secretForm.addEventListener("submit", (ev) => {
    ev.preventDefault();
    busy(status, `Setting ${sKey.value}…`, async () => {
      await call(
        "PUT",
        `${ctx.base}/secrets/${enc(sKey.value.trim())}`,
        sVal.value,
        "text/plain; charset=utf-8",
      );
      sVal.value = "";
      rerender();
    }, secretForm);
  });
  const danger = h(
    "div",
    { class: "card danger" },
    h("h2", { text: "Delete this function" }),
    h("p", { text: "Deletes every version, its config and its secrets. Its URL answers 404 at once." }),
  );
  const confirmName = h("input", { name: "confirm-name", autocomplete: "off" });
  const del = h("button", {
    type: "submit",
    class: "danger",
    id: "delete",
    disabled: true,
    text: `Delete ${ctx.name}`,
  });
  confirmName.addEventListener("input", () => {
    del.disabled = confirmName.value !== ctx.name;
  });
  const delForm = h("form", { class: "row" }, field(`Type ${ctx.name} to confirm`, confirmName), del);
  delForm.addEventListener("submit", (ev) => {
    ev.preventDefault();
    if (confirmName.value !== ctx.name) return;
    busy(status, "Deleting…", async () => {
      await call("DELETE", ctx.base);
      location.hash = "#/";
    }, delForm);
  });
  danger.append(delForm);
  panel.append(status, envForm, secretForm, danger);
}

async function logsPanel(panel: HTMLElement, ctx: Ctx): Promise<void> {
  const live = h("input", { type: "checkbox", checked: true });
  const lines = h("ol", { class: "log", "aria-label": "Log lines", tabindex: "0" });
  const status = h("div", { class: "status", role: "status", "aria-live": "polite" });
  panel.append(
    h(
      "div",
      { class: "row panel-head" },
      h("h2", { text: "Log tail" }),
      h("label", { class: "check" }, live, " Follow (every 2 s)"),
    ),
    status,
    lines,
  );
  let shown = "";
  const load = async () => {
    try {
      const text = (await call("GET", `${ctx.base}/logs?tail=200`)).text;
      if (text === shown) return;
      shown = text;
      const stick = lines.scrollTop + lines.clientHeight >= lines.scrollHeight - 4;
      clear(lines);
      for (const l of text.split("\n")) {
        if (!l) continue;
        const m = /^(\S+) (\S+) \| ?(.*)$/.exec(l);
        lines.append(
          m
            ? h(
              "li",
              { class: `s-${m[2].replace(/[^a-z]/g, "")}` },
              h("time", { text: m[1].slice(11, 19) }),
              h("span", { class: "stream", text: m[2] }),
              h("span", { class: "msg", text: visible(m[3]) }),
            )
            : h("li", {}, h("span", { class: "msg", text: visible(l) })),
        );
      }
      if (!lines.firstChild) {
        lines.append(h("li", { class: "muted", text: "No lines yet: call the function." }));
      }
      if (stick) lines.scrollTop = lines.scrollHeight;
      clear(status);
    } catch (e) {
      status.replaceChildren(alertBox(describe(e)));
    }
  };
  await load();
  const timer = setInterval(() => {
    if (live.checked) load();
  }, 2000);
  ctx.cleanups.push(() => clearInterval(timer));
}

async function metricsPanel(panel: HTMLElement, ctx: Ctx): Promise<void> {
  const win = h(
    "select",
    { name: "window" },
    ...["15m", "1h", "6h", "24h", "7d"].map((w) => h("option", { value: w, text: w })),
  );
  win.value = "15m";
  const box = h("div", { class: "charts" });
  const status = h("div", { class: "status", role: "status", "aria-live": "polite" });
  panel.append(
    h("div", { class: "row panel-head" }, h("h2", { text: "Metrics" }), field("Window", win)),
    status,
    box,
  );
  const load = async () => {
    try {
      const s = (await call("GET", `${ctx.base}/stats?window=${enc(win.value)}`)).json;
      const series: Json[] = s.series;
      const t = series.map((p) => Number(p.t));
      const num = (k: string) =>
        series.map((p) => (p[k] === null || p[k] === undefined ? null : Number(p[k])));
      const fmt = (v: unknown) => (v === null || v === undefined ? "–" : `${v} ms`);
      box.replaceChildren(
        h(
          "dl",
          { class: "totals" },
          ...[
            ["Invocations", s.invocations],
            ["Errors", s.errors],
            ["Cold starts", s.cold_starts],
            ["p50", fmt(s.p50_ms)],
            ["p95", fmt(s.p95_ms)],
            ["p99", fmt(s.p99_ms)],
          ]
            .flatMap((
              [k, v],
            ) => [h("dt", { text: String(k) }), h("dd", { "data-total": String(k), text: String(v) })]),
        ),
        chart(
          "Invocations and errors per minute",
          t,
          [
            { name: "invocations", cls: "calls", values: num("invocations") },
            { name: "errors (5xx)", cls: "errors", values: num("errors") },
          ],
          "",
          true,
        ),
        chart("Latency percentiles per minute", t, [
          { name: "p50", cls: "p50", values: num("p50_ms") },
          { name: "p95", cls: "p95", values: num("p95_ms") },
          { name: "p99", cls: "p99", values: num("p99_ms") },
        ], "ms"),
        chart(
          "Cold starts per minute",
          t,
          [{ name: "cold starts", cls: "cold", values: num("cold_starts") }],
          "",
          true,
        ),
      );
      clear(status);
    } catch (e) {
      status.replaceChildren(alertBox(describe(e)));
    }
  };
  win.addEventListener("change", load);
  await load();
  const timer = setInterval(load, 5000);
  ctx.cleanups.push(() => clearInterval(timer));
}
