// A Node-style project: bare names resolved through package.json dependencies.
import { Hono } from "hono";
import { greet } from "@skiff-test/greet";
import { mean } from "@skiff-test/toolkit/math";

const app = new Hono();
app.get("/greet/:name", (c) => c.text(greet(c.req.param("name"))));
app.get("/mean", (c) => c.json({ mean: mean((c.req.query("xs") ?? "").split(",").map(Number)) }));

export default app;
