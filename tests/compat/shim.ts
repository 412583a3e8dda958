// Runs one fixture with plain Deno, without Skiff, to validate the fixture and the
// local registries on their own. The harness writes, next to the fixture's entry:
//   import { serveModule } from "<this file>";   // first: patches Deno.serve & co.
//   import * as mod from "./<entry>";
//   serveModule(mod);
// and runs `deno run -A <that file> <port>` in the fixture's dir (a static import, so
// the fixture's deno.json / package.json apply as they would to the user).
// It adapts the handler shapes the suite covers (the platform's client runtime does
// the same for real): default function (a Request that also carries svrless' `req`),
// default { fetch(req, env, ctx) }, Deno.serve(...) at the top level,
// addEventListener("fetch"), named method exports (405 for the others).
// Prints "listening" on stdout once it serves on 127.0.0.1:<port>.

type Handler = (req: Request) => Response | Promise<Response>;

const port = Number(Deno.args[0]);
const realServe = Deno.serve.bind(Deno);

let served: Handler | undefined;
// deno-lint-ignore no-explicit-any
(Deno as any).serve = (a: any, b?: any) => {
  const handler = typeof a === "function" ? a : typeof b === "function" ? b : a?.handler;
  served = handler;
  const finished = new Promise<void>(() => {});
  return {
    finished,
    shutdown: () => Promise.resolve(),
    addr: { transport: "tcp", hostname: "127.0.0.1", port },
    ref() {},
    unref() {},
  };
};

let fetchListener: ((e: unknown) => void) | undefined;
const realAdd = globalThis.addEventListener.bind(globalThis);
// deno-lint-ignore no-explicit-any
(globalThis as any).addEventListener = (type: string, fn: any, opts?: any) => {
  if (type === "fetch") fetchListener = fn;
  else realAdd(type, fn, opts);
};

function viaEvent(
  call: (
    event: { request: Request; respondWith(r: Response | Promise<Response>): Promise<void> },
  ) => unknown,
): (req: Request) => Promise<Response> {
  return (request) =>
    new Promise<Response>((resolve, reject) => {
      const event = {
        request,
        respondWith(r: Response | Promise<Response>) {
          return Promise.resolve(r).then(resolve, reject);
        },
      };
      Object.defineProperty(request, "req", { value: event, enumerable: false });
      Promise.resolve().then(() => call(event)).then((v) => {
        if (v instanceof Response) resolve(v);
      }, reject);
    });
}

// deno-lint-ignore no-explicit-any
export function serveModule(mod: any): void {
  const METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];
  let handler: Handler;
  if (typeof mod.default === "function") {
    const fn = mod.default;
    handler = viaEvent((event) => fn(event.request));
  } else if (mod.default && typeof mod.default.fetch === "function") {
    const obj = mod.default;
    handler = async (req) => {
      const pending: Promise<unknown>[] = [];
      const res = await obj.fetch(req, {}, {
        waitUntil: (p: Promise<unknown>) => pending.push(p),
        passThroughOnException() {},
      });
      return res;
    };
  } else if (served) {
    handler = served;
  } else if (fetchListener) {
    const l = fetchListener;
    handler = viaEvent((event) => l(event));
  } else if (METHODS.some((m) => typeof mod[m] === "function")) {
    handler = (req) => {
      const f = mod[req.method];
      if (typeof f !== "function") return new Response("method not allowed", { status: 405 });
      return f(req);
    };
  } else {
    console.error("no handler in the module");
    Deno.exit(3);
  }

  realServe(
    { hostname: "127.0.0.1", port, onListen: () => console.log("listening") },
    (req) => handler(req),
  );
}
