// A directory upload: relative imports, a nested dir and a JSON module.
import { formatPrice } from "./lib/format.ts";
import { taxRate } from "./lib/nested/tax.ts";
import config from "./data/config.json" with { type: "json" };

export default (req: Request): Response => {
  const amount = Number(new URL(req.url).searchParams.get("amount") ?? "0");
  const total = amount * (1 + taxRate(config.region));
  return Response.json({
    shop: config.shopName,
    region: config.region,
    total: formatPrice(total, config.currency),
  });
};
