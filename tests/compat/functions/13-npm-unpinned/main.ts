// npm: without a version (latest) and with a major range.
import { Hono } from "npm:hono";
import { z } from "npm:zod@3";

const app = new Hono();
const Query = z.object({ n: z.coerce.number().int().min(1).max(10) });

app.get("/square", (c) => {
  const q = Query.safeParse(c.req.query());
  if (!q.success) return c.json({ error: "n must be an integer in 1..10" }, 400);
  return c.json({ n: q.data.n, square: q.data.n * q.data.n });
});

export default app;
