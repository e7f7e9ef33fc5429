// Asking the server for a conversation (POST /token), and what to tell the person when it says
// no: from the HTTP status and the error body's `code`, never from the wording of `detail`.
import { fetchClient } from "./api";
import type { components } from "./gen/api";
import { UNREACHABLE } from "./link/link";

type ApiError = components["schemas"]["Error"];

export type Refused = { ok: false; error: string; needsKey: boolean };
export type TokenResult = { ok: true; token: string; url: string } | Refused;

export async function requestToken(accessKey: string): Promise<TokenResult> {
  // The server names the room and this person: nobody else can join or take it over.
  return conversationRequest(
    (headers) => fetchClient.POST("/token", { body: { name: "Guest" }, headers }),
    accessKey, (data) => ({ ok: true, token: data.token, url: data.url }));
}

/** One of the requests that start a conversation (a token; TURN servers and an offer), sent with
 * the access key: what `accepted` makes of its answer, or the words for a refusal (and whether
 * to ask for the key), or for a server that cannot be reached. */
export async function conversationRequest<T, R>(
  send: (headers: Record<string, string>) => Promise<{ data?: T; error?: unknown; response: Response }>,
  accessKey: string, accepted: (data: T) => R): Promise<R | Refused> {
  try {
    const { data, error, response } = await send(accessKey ? { Authorization: `Bearer ${accessKey}` } : {});
    if (data) return accepted(data);
    return { ok: false, error: tokenError(response, error), needsKey: response.status === 401 || response.status === 403 };
  } catch {
    return { ok: false, error: UNREACHABLE, needsKey: false };
  }
}

export function tokenError(response: Response, error: unknown): string {
  const { status } = response;
  const body = (error ?? {}) as Partial<ApiError>;
  const detail = typeof body.detail === "string" ? body.detail : undefined;
  if (status === 401) return "This server needs an access key. Enter the key your administrator gave you.";
  if (status === 403) return "Access refused: the access key is wrong.";
  if (status === 429) return "Too many attempts. Wait a minute and try again.";
  if (status === 503 && body.code === "busy") {
    const seconds = Number(response.headers.get("Retry-After")) || 30;
    return `All avatars are busy right now: everyone this server can talk to at once is already talking. Try again in ${seconds} seconds.`;
  }
  if (status === 503) return `The assistant is not ready yet: ${detail ?? "models are loading"}.`;
  return `The server refused to start a conversation (${status}${detail ? `: ${detail}` : ""}).`;
}
