// Plain http: to a loopback port (the platform's own services live on loopback).
import { x } from "http://127.0.0.1:{{FREE_PORT}}/x.ts";

export default () => new Response(String(x));
