// Ambient types for legacy "svrless" handlers on Deno 2.
//
// Deno 2 removed `Deno.RequestEvent`; handlers written for svrless look like
//   export default async function handler(
//     { req }: { req: Deno.RequestEvent; conn?: Deno.Conn },
//   ) { await req.respondWith(new Response("hi")); }
// This file re-declares just that interface (merged into the global `Deno`
// namespace) so such handlers pass `deno check`, and types the event of
// service-worker style `addEventListener("fetch", (e) => e.respondWith(…))`. It has no imports or
// exports on purpose: it must stay a global (script) declaration file.
//
// Deploy-time check recipe (verified with Deno 2.9.8), in a temp dir holding
//   fn.ts           the user's module
//   skiff-env.d.ts  a copy of this file
//   deno.json       {"compilerOptions":{"types":["./skiff-env.d.ts"]}}
// run: deno check --no-remote --no-npm --config deno.json fn.ts

declare namespace Deno {
  /** What the Skiff runtime passes as `req` to a svrless-style handler. */
  interface RequestEvent {
    readonly request: Request;
    respondWith(r: Response | PromiseLike<Response>): Promise<void>;
  }
}

/** What a service-worker style `addEventListener("fetch", …)` listener gets. */
interface FetchEvent extends Event {
  readonly request: Request;
  /** Must be called during the dispatch, with a Response or a promise of one. */
  respondWith(r: Response | PromiseLike<Response>): Promise<void>;
  /** Keeps the instance working on `p` after the response. */
  waitUntil(p: PromiseLike<unknown>): void;
  /** Accepted for compatibility; does nothing. */
  passThroughOnException(): void;
}

interface WindowEventMap {
  fetch: FetchEvent;
}
