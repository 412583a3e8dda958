// svrless example "load": burns CPU for ?n= iterations and returns a number.
export default async function handler({ req }: { req: Deno.RequestEvent; conn?: Deno.Conn }) {
  const n = Math.min(Number(new URL(req.request.url).searchParams.get("n") ?? "1000"), 50_000_000);
  let acc = 0;
  for (let i = 0; i < n; i++) {
    acc = (acc + i * i) % 1_000_003;
  }
  await req.respondWith(new Response(String(acc)));
}
