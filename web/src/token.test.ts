import { describe, expect, it } from "vitest";
import { tokenError } from "./token";

const answer = (status: number, headers: Record<string, string> = {}) => new Response(null, { status, headers });

describe("what the page says when the server gives no conversation", () => {
  it("busy: every avatar in use, and when to come back (from code and Retry-After)", () => {
    const text = tokenError(answer(503, { "Retry-After": "45" }), { detail: "anything", code: "busy" });
    expect(text).toContain("All avatars are busy");
    expect(text).toContain("45 seconds");
  });
  it("loading, a key missing or wrong, too many attempts", () => {
    expect(tokenError(answer(503), { detail: "models are still loading", code: "loading" }))
      .toBe("The assistant is not ready yet: models are still loading.");
    expect(tokenError(answer(401), { detail: "x" })).toContain("needs an access key");
    expect(tokenError(answer(403), { detail: "x" })).toContain("access key is wrong");
    expect(tokenError(answer(429), { detail: "x" })).toContain("Wait a minute");
  });
});
