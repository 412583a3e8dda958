// svrless example "log-useragent": logs the User-Agent, answers "ok".
export default async function handler({ req }: { req: Deno.RequestEvent; conn?: Deno.Conn }) {
  console.log(`user-agent: ${req.request.headers.get("user-agent")}`);
  await req.respondWith(new Response("ok"));
}
