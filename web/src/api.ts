// The HTTP API client, typed from the server's committed OpenAPI schema (src/gen/api.ts).
import createFetchClient from "openapi-fetch";
import createClient from "openapi-react-query";
import type { paths } from "./gen/api";

export const fetchClient = createFetchClient<paths>({ baseUrl: typeof window === "undefined" ? "http://localhost" : window.location.origin });
export const $api = createClient(fetchClient);
