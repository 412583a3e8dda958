// svrless example "cards": draws a random card from a 52-card deck.
const suits = ["hearts", "diamonds", "clubs", "spades"];
const ranks = ["A", "2", "3", "4", "5", "6", "7", "8", "9", "10", "J", "Q", "K"];
const deck = suits.flatMap((suit) => ranks.map((rank) => ({ rank, suit })));

export default async function handler({ req }: { req: Deno.RequestEvent; conn?: Deno.Conn }) {
  const card = deck[Math.floor(Math.random() * deck.length)];
  await req.respondWith(
    new Response(JSON.stringify({ card, deckSize: deck.length }), {
      headers: { "content-type": "application/json" },
    }),
  );
}
