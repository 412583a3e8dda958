// The original svrless shape: the handler gets { req } (a Deno.RequestEvent)
// and answers with req.respondWith().
export default async function handler({ req }: { req: Deno.RequestEvent; conn?: Deno.Conn }) {
  const url = new URL(req.request.url);
  await req.respondWith(
    new Response(`svrless says hi to ${url.searchParams.get("who") ?? "nobody"} via ${req.request.method}`),
  );
}
