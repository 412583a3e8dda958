// A Cloudflare Workers module: fetch(request, env, ctx), with work after the
// response handed to ctx.waitUntil.
interface Env {
  GREETING?: string;
}

interface ExecutionContext {
  waitUntil(promise: Promise<unknown>): void;
  passThroughOnException?(): void;
}

const MARKER = "/tmp/cf-worker-background.txt";

async function recordVisit(path: string): Promise<void> {
  // Runs after the response was sent.
  await new Promise((r) => setTimeout(r, 50));
  await Deno.writeTextFile(MARKER, `background work for ${path}\n`, { append: true });
}

export default {
  async fetch(request: Request, env: Env, ctx: ExecutionContext): Promise<Response> {
    const url = new URL(request.url);
    if (url.pathname === "/background") {
      let seen = "";
      try {
        seen = await Deno.readTextFile(MARKER);
      } catch {
        seen = "";
      }
      return new Response(seen);
    }
    ctx.waitUntil(recordVisit(url.pathname));
    return Response.json({
      envIsObject: typeof env === "object" && env !== null,
      greeting: env?.GREETING ?? "no greeting configured",
      hasWaitUntil: typeof ctx.waitUntil === "function",
    });
  },
};
