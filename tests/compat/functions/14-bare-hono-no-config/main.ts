// Copied from a Hono tutorial: a bare "hono" import, no deno.json anywhere.
import { Hono } from "hono";

const app = new Hono();

app.get("/", (c) => c.text("Hello Hono!"));
app.get("/users/:id", (c) => c.json({ id: c.req.param("id"), kind: "user" }));
app.post("/echo", async (c) => c.json(await c.req.json()));

export default app;
