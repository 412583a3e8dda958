import { call, signIn } from "../api.ts";
import { field, h } from "../dom.ts";
import { busy } from "../ui.ts";

/** Sign in, or sign up (the manager answers 403 when signup is closed). */
export function authPage(root: HTMLElement, done: () => void): void {
  const user = h("input", {
    name: "username",
    autocomplete: "username",
    required: true,
    minlength: 3,
    maxlength: 32,
    pattern: "[a-z][a-z0-9\\-]*[a-z0-9]",
  });
  const pass = h("input", {
    name: "password",
    type: "password",
    autocomplete: "current-password",
    required: true,
  });
  const status = h("div", { class: "status", role: "status", "aria-live": "polite" });
  const signInBtn = h("button", { type: "submit", class: "primary", text: "Sign in" });
  const signUpBtn = h("button", { type: "button", text: "Create account" });
  const form = h(
    "form",
    { class: "card auth", "aria-labelledby": "auth-title" },
    h("h1", { id: "auth-title", text: "Skiff console" }),
    h("p", { class: "muted", text: "Sign in to deploy and watch your functions." }),
    field("Username", user, "3–32 characters: a–z, 0–9 and -"),
    field("Password", pass),
    h("div", { class: "row" }, signInBtn, signUpBtn),
    status,
  );
  const login = async () => {
    const body = JSON.stringify({ username: user.value, password: pass.value });
    const a = await call("POST", "/login", body, "application/json");
    signIn(String(a.json.token), user.value);
    done();
  };
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    busy(status, "Signing in…", login);
  });
  signUpBtn.addEventListener("click", () => {
    if (!form.reportValidity()) return;
    busy(status, "Creating the account…", async () => {
      const body = JSON.stringify({ username: user.value, password: pass.value });
      await call("POST", "/register", body, "application/json");
      await login();
    });
  });
  root.append(h("main", { class: "center" }, form));
  user.focus();
}
