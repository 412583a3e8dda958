// Common JavaScript habit: err.message on a catch variable (unknown in TS: TS18046).
export default async (req: Request) => {
  try {
    const data = JSON.parse(await req.text());
    return Response.json({ parsed: data });
  } catch (err) {
    return new Response(err.message, { status: 422 });
  }
};
