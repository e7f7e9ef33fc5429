// Asking the server for a conversation (POST /token), and what to tell the person when it says
// no: from the HTTP status and the error body's `code`, never from the wording of `detail`.
import { fetchClient } from "./api";
import type { components } from "./gen/api";
import { UNREACHABLE } from "./link/link";

type ApiError = components["schemas"]["Error"];

export type TokenResult =
  | { ok: true; token: string; url: string }
  | { ok: false; error: string; needsKey: boolean };

export async function requestToken(accessKey: string): Promise<TokenResult> {
  try {
    // The server names the room and this person: nobody else can join or take it over.
    const { data, error, response } = await fetchClient.POST("/token", {
      body: { name: "Guest" },
      headers: accessKey ? { Authorization: `Bearer ${accessKey}` } : {},
    });
    if (data) return { ok: true, token: data.token, url: data.url };
    return refusal(response, error);
  } catch {
    return { ok: false, error: UNREACHABLE, needsKey: false };
  }
}

/** A refused conversation request (a token or an offer): the words, and whether to ask for the key. */
export function refusal(response: Response, error: unknown): { ok: false; error: string; needsKey: boolean } {
  return { ok: false, error: tokenError(response, error), needsKey: response.status === 401 || response.status === 403 };
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
