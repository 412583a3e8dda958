// Ambient types for legacy "svrless" handlers on Deno 2.
//
// Deno 2 removed `Deno.RequestEvent`; handlers written for svrless look like
//   export default async function handler(
//     { req }: { req: Deno.RequestEvent; conn?: Deno.Conn },
//   ) { await req.respondWith(new Response("hi")); }
// This file re-declares just that interface (merged into the global `Deno`
// namespace) so such handlers pass `deno check`. It has no imports or
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
