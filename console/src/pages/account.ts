import { call, session, signOut } from "../api.ts";
import { button, h } from "../dom.ts";
import { busy } from "../ui.ts";

export function accountPage(root: HTMLElement): void {
  const status = h("div", { class: "status", role: "status", "aria-live": "polite" });
  const card = h(
    "div",
    { class: "card" },
    h("h2", { text: "Session" }),
    h(
      "p",
      {},
      "Signed in as ",
      h("strong", { text: session()?.user ?? "" }),
      ". The token is kept in this tab's memory only.",
    ),
    button("Sign out", () => signOut(), { id: "sign-out" }),
  );
  const revoke = h(
    "div",
    { class: "card danger" },
    h("h2", { text: "Revoke all my tokens" }),
    h("p", {
      text:
        "Every token issued to you stops working at once: this tab, other browsers and the CLI must sign in again.",
    }),
  );
  revoke.append(button("Revoke all tokens", () => {
    busy(status, "Revoking…", async () => {
      await call("POST", "/tokens/revoke");
      signOut();
    }, revoke);
  }, { class: "danger", id: "revoke" }));
  root.append(h("main", { class: "page" }, h("h1", { text: "Account" }), card, revoke, status));
}
