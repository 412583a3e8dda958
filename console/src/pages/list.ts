import { call, enc } from "../api.ts";
import { sparkline } from "../charts.ts";
import { field, h } from "../dom.ts";
import { alertBox, describe } from "../ui.ts";

const NAME = /^[a-z]([a-z0-9-]{0,38}[a-z0-9])?$/;

interface Item {
  name: string;
  version: number;
  url: string;
  updated_at: string;
}

/** Every function with its live version, state and last hour of calls. */
export async function listPage(root: HTMLElement): Promise<void> {
  const main = h("main", { class: "page" }, h("h1", { text: "Functions" }));
  root.append(main);
  const name = h("input", { name: "new-name", maxlength: 40, placeholder: "hello" });
  const err = h("div", { role: "status", "aria-live": "polite" });
  const create = h(
    "form",
    { class: "card row new-fn", "aria-label": "New function" },
    field("New function name", name, "1–40 characters: a–z, 0–9 and -, starting with a letter"),
    h("button", { type: "submit", class: "primary", text: "Create" }),
    err,
  );
  create.addEventListener("submit", (ev) => {
    ev.preventDefault();
    if (!NAME.test(name.value)) {
      err.replaceChildren(alertBox("That is not a valid function name."));
      return;
    }
    location.hash = `#/fn/${name.value}`;
  });
  main.append(create);
  let items: Item[];
  try {
    items = (await call("GET", "/func")).json.functions as Item[];
  } catch (e) {
    main.append(alertBox(describe(e)));
    return;
  }
  if (items.length === 0) {
    main.append(h("p", { class: "muted", text: "No functions yet: name one above to write it here." }));
    return;
  }
  const body = h("tbody");
  const table = h(
    "table",
    { class: "fn-list" },
    h("caption", { class: "sr-only", text: "Your functions" }),
    h(
      "thead",
      {},
      h(
        "tr",
        {},
        ...["Name", "Live version", "State", "Calls / errors (1 h)", "Updated"].map((t) =>
          h("th", { scope: "col", text: t })
        ),
      ),
    ),
    body,
  );
  main.append(h("div", { class: "table-wrap" }, table));
  await Promise.all(items.map(async (f) => {
    const state = h("td", { class: "muted", text: "…" });
    const spark = h("td", { class: "spark-cell" });
    body.append(
      h(
        "tr",
        {},
        h("th", { scope: "row" }, h("a", { href: `#/fn/${f.name}`, text: f.name })),
        h("td", { text: `v${f.version}` }),
        state,
        spark,
        h("td", { text: new Date(f.updated_at).toLocaleString() }),
      ),
    );
    const [info, stats] = await Promise.allSettled([
      call("GET", `/func/${enc(f.name)}`),
      call("GET", `/func/${enc(f.name)}/stats?window=1h`),
    ]);
    if (info.status === "fulfilled") {
      const rt = info.value.json.runtime;
      state.textContent = rt ? String(rt.state) : "deployed";
      state.className = `state ${rt ? String(rt.state) : "deployed"}`;
    } else state.textContent = "unknown";
    if (stats.status === "fulfilled") {
      const s = stats.value.json;
      // deno-lint-ignore no-explicit-any
      const series = s.series as any[];
      spark.append(
        sparkline(series.map((p) => Number(p.invocations)), series.map((p) => Number(p.errors))),
        h("span", { class: "spark-text", text: `${s.invocations} / ${s.errors}` }),
      );
    }
  }));
}
