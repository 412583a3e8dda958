// svrless example "access-log": appends each request line to /tmp/access.log
// and answers with the whole log.
const LOG = "/tmp/access.log";

export default async function handler({ req }: { req: Deno.RequestEvent; conn?: Deno.Conn }) {
  const { method, url } = req.request;
  const line = `${new Date().toISOString()} ${method} ${new URL(url).pathname}\n`;
  await Deno.writeTextFile(LOG, line, { append: true });
  const log = await Deno.readTextFile(LOG);
  await req.respondWith(new Response(log, { headers: { "content-type": "text/plain" } }));
}
