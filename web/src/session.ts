// The console's connection to one keymint: its URL and the caller's token, held in this page's memory only.
//
// The token is never written to localStorage, sessionStorage, a cookie or the URL: closing or reloading the tab
// forgets it, which is what an admin credential pasted into a browser should do.

import { type Client, type Interceptor, createClient } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import { ManagementService } from "./gen/keymint/management/v1/management_pb";
import { ApiKeyService } from "./gen/keymint/apikeys/v1/apikeys_pb";

export interface Session {
  server: string;
  management: Client<typeof ManagementService>;
  apiKeys: Client<typeof ApiKeyService>;
}

/** A session that calls `server` over gRPC-Web with `authorization: Bearer <token>` on every call. */
export function openSession(server: string, token: string): Session {
  const bearer: Interceptor = (next) => (request) => {
    request.header.set("authorization", `Bearer ${token}`);
    return next(request);
  };
  const transport = createGrpcWebTransport({
    // keymint serves gRPC-Web on its one port, and so does Envoy in front of it: the same URL form for both.
    baseUrl: server.replace(/\/+$/, ""),
    interceptors: [bearer],
    // Each call gets a deadline so a server that hangs shows up as an error instead of a page that waits forever.
    defaultTimeoutMs: 30_000,
  });
  return {
    server,
    management: createClient(ManagementService, transport),
    apiKeys: createClient(ApiKeyService, transport),
  };
}

/** The server the page talks to: `?server=` when given, else the origin that served the page. */
export function defaultServer(location: Location): string {
  const fromQuery = new URLSearchParams(location.search).get("server");
  return fromQuery && fromQuery.trim() !== "" ? fromQuery.trim() : location.origin;
}
