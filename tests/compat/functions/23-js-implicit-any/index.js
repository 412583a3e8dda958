// Plain JavaScript, no types anywhere: nothing to warn about.
function pick(obj, keys) {
  const out = {};
  for (const k of keys) if (k in obj) out[k] = obj[k];
  return out;
}

export default async function (request) {
  const params = Object.fromEntries(new URL(request.url).searchParams);
  return Response.json(pick(params, ["a", "c"]));
}
