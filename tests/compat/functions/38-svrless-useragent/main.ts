// svrless example "useragent": returns the caller's User-Agent.
export default async function handler({ req }: { req: Deno.RequestEvent; conn?: Deno.Conn }) {
  const ua = req.request.headers.get("user-agent") ?? "unknown";
  await req.respondWith(new Response(`Your user agent is: ${ua}`));
}
