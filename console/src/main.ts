// The console's entry: a hash router over the pages. Only the manager's API is
// used, with the same bearer tokens as the CLI.

import { onSignedOut, session, signOut } from "./api.ts";
import { button, h } from "./dom.ts";
import { accountPage } from "./pages/account.ts";
import { authPage } from "./pages/auth.ts";
import { functionPage, tabOfSlug } from "./pages/func.ts";
import { listPage } from "./pages/list.ts";

const app = document.getElementById("app") as HTMLElement;
let leave: () => void = () => {};
let drawing = 0;

function nav(): HTMLElement {
  const s = session();
  return h(
    "header",
    { class: "top" },
    h("a", { href: "#/", class: "brand", text: "Skiff" }),
    h(
      "nav",
      { "aria-label": "Main" },
      h("a", { href: "#/", text: "Functions" }),
      h("a", { href: "#/account", text: "Account" }),
      h("span", { class: "who", text: s?.user ?? "" }),
      button("Sign out", () => signOut(), { class: "link" }),
    ),
  );
}

/** A part of the address; a malformed escape is kept as typed (shown as text). */
function decode(part: string): string {
  try {
    return decodeURIComponent(part);
  } catch {
    return part;
  }
}

async function draw(): Promise<void> {
  const mine = ++drawing;
  leave();
  leave = () => {};
  const page = h("div", { class: "shell" });
  app.replaceChildren(page);
  if (!session()) {
    authPage(page, () => {
      if (location.hash === "" || location.hash === "#/login") location.hash = "#/";
      else draw();
    });
    return;
  }
  page.append(nav());
  const route = location.hash.replace(/^#\/?/, "").split("/").map(decode);
  if (route[0] === "fn" && route[1]) {
    const stop = await functionPage(page, route[1], tabOfSlug(route[2] ?? "code"));
    if (mine === drawing) leave = stop;
    else stop();
  } else if (route[0] === "account") {
    accountPage(page);
  } else {
    await listPage(page);
  }
  const heading = page.querySelector("h1");
  if (heading && mine === drawing && !page.contains(document.activeElement)) {
    heading.setAttribute("tabindex", "-1");
    heading.focus({ preventScroll: true });
  }
}

onSignedOut(() => draw());
globalThis.addEventListener("hashchange", () => draw());
draw();
