// The HTTP API client, typed from the server's committed OpenAPI schema (src/gen/api.ts): every
// request of the page goes through it (token in conversation.ts, avatars and voices in app/page.tsx).
import createFetchClient from "openapi-fetch";
import type { components, paths } from "./gen/api";

export type AvatarList = components["schemas"]["AvatarList"];
export type VoiceList = components["schemas"]["VoiceList"];

export const fetchClient = createFetchClient<paths>({ baseUrl: typeof window === "undefined" ? "http://localhost" : window.location.origin });
