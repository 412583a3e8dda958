// Next.js route-handler style: one named export per HTTP method.
const notes: string[] = [];

export function GET(req: Request): Response {
  const url = new URL(req.url);
  return Response.json({ notes, path: url.pathname });
}

export async function POST(req: Request): Promise<Response> {
  const { text } = await req.json();
  if (typeof text !== "string") {
    return Response.json({ error: "text must be a string" }, { status: 400 });
  }
  notes.push(text);
  return Response.json({ added: text }, { status: 201 });
}
