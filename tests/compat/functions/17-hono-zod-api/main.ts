// A small JSON API: Hono routes, zod validation, 400 with the issues on bad input.
import { Hono } from "npm:hono@4";
import { HTTPException } from "npm:hono@4/http-exception";
import { z } from "npm:zod@3";

const Signup = z.object({
  email: z.string().email(),
  age: z.number().int().min(13),
  plan: z.enum(["free", "pro"]).default("free"),
});
type Signup = z.infer<typeof Signup>;

const app = new Hono().basePath("/api");

app.post("/signup", async (c) => {
  let raw: unknown;
  try {
    raw = await c.req.json();
  } catch {
    throw new HTTPException(400, { message: "body must be JSON" });
  }
  const parsed = Signup.safeParse(raw);
  if (!parsed.success) {
    return c.json({ ok: false, issues: parsed.error.issues.map((i) => i.path.join(".")) }, 400);
  }
  const user: Signup = parsed.data;
  return c.json({ ok: true, user }, 201);
});

app.onError((err, c) => {
  if (err instanceof HTTPException) return c.json({ ok: false, error: err.message }, err.status);
  return c.json({ ok: false, error: "internal" }, 500);
});

export default app;
