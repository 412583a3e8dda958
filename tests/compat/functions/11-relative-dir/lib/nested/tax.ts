import rates from "../../data/rates.json" with { type: "json" };

export function taxRate(region: string): number {
  return (rates as Record<string, number>)[region] ?? 0;
}
