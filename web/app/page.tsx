"use client";

import { type FormEvent, memo, useEffect, useRef, useState, useSyncExternalStore } from "react";
import { type AvatarList, fetchClient, type VoiceList } from "@/api";
import type { AvatarDriver } from "@/avatar/driver";
import { type ChatLine, type Connection, Conversation, type Snapshot } from "@/conversation";

export default function Page() {
  return <Talk />;
}

/** GET /voices once: the voices to choose between (none shown if it fails; the default stays). */
function useVoices(): VoiceList | null {
  const [voices, setVoices] = useState<VoiceList | null>(null);
  useEffect(() => {
    let live = true;
    void fetchClient.GET("/voices").then((r) => { if (live && r.data) setVoices(r.data); }, () => {});
    return () => { live = false; };
  }, []);
  return voices;
}

/** GET /avatars once (one retry), through the same typed client as the token request. */
function useAvatars(): { data: AvatarList | null; isError: boolean } {
  const [state, setState] = useState<{ data: AvatarList | null; isError: boolean }>({ data: null, isError: false });
  useEffect(() => {
    let live = true;
    const load = async (retries: number): Promise<void> => {
      const data = await fetchClient.GET("/avatars").then((r) => r.data ?? null, () => null);
      if (!live) return;
      if (data) setState({ data, isError: false });
      else if (retries > 0) await load(retries - 1);
      else setState({ data: null, isError: true });
    };
    void load(1);
    return () => { live = false; };
  }, []);
  return state;
}

const CONNECTION_WORDS: Record<Connection, string> = {
  idle: "Not connected",
  connecting: "Connecting…",
  connected: "Connected",
  reconnecting: "Connection interrupted, reconnecting…",
  failed: "Not connected",
};
const STATE_WORDS = { idle: "Waiting", listening: "Listening", thinking: "Thinking", speaking: "Speaking" };
const IDLE: Snapshot = {
  connection: "idle", error: null, needsKey: false, warning: null, notice: null, chatError: null, voice: null, muted: false, devices: [], deviceId: null,
  lines: [], speaking: null, avatarState: "idle", latencies: [],
};

function Talk() {
  const avatarNode = useRef<HTMLDivElement>(null);
  const [driver, setDriver] = useState<AvatarDriver | null>(null);
  const [conversation, setConversation] = useState<Conversation | null>(null);
  const [avatarUrl, setAvatarUrl] = useState<string | null>(null);
  const [progress, setProgress] = useState<number | null>(0);
  const [avatarError, setAvatarError] = useState<string | null>(null);
  const [accessKey, setAccessKey] = useState("");
  const avatars = useAvatars();
  const voices = useVoices();

  const snap = useSyncExternalStore(
    conversation?.subscribe ?? noSubscribe, conversation?.snapshot ?? idleSnapshot, idleSnapshot);

  useEffect(() => { setAccessKey(localStorage.getItem("accessKey") ?? ""); }, []);

  // The 3D view, once per page.
  useEffect(() => {
    let disposed = false;
    let made: AvatarDriver | null = null;
    void import("@/avatar/driver").then(async ({ AvatarDriver }) => {
      if (disposed || !avatarNode.current) return;
      made = await AvatarDriver.create(avatarNode.current);
      const measure = new URLSearchParams(location.search).has("measure");
      const conv = new Conversation(made, measure);
      Object.assign(window, { __avatar: { driver: made, conversation: conv } });
      setDriver(made);
      setConversation(conv);
    }).catch(() => setAvatarError("This browser cannot show the 3D avatar (WebGL is unavailable)."));
    return () => { disposed = true; made?.dispose(); };
  }, []);

  // The server's default avatar, until the person picks another.
  useEffect(() => {
    const list = avatars.data;
    if (!avatarUrl && list?.default) {
      setAvatarUrl(list.avatars.find((a) => a.name === list.default)?.url ?? null);
    }
  }, [avatars.data, avatarUrl]);

  useEffect(() => {
    if (!driver || !avatarUrl) return;
    let current = true; // a newer choice supersedes this load: its progress and errors are not shown
    setProgress(0);
    setAvatarError(null);
    driver.show(avatarUrl, (loaded, total) => { if (current) setProgress(total ? loaded / total : null); })
      .then(() => { if (current) setProgress(1); })
      .catch(() => {
        if (!current) return;
        setProgress(1);
        setAvatarError("This avatar file could not be loaded. It must be a GLB with ARKit and Oculus viseme blend shapes.");
      });
    return () => { current = false; };
  }, [driver, avatarUrl]);
  // A person's own file is a blob: URL; the one it replaces is freed.
  const chooseAvatar = (url: string) => setAvatarUrl((previous) => {
    if (previous?.startsWith("blob:")) URL.revokeObjectURL(previous);
    return url;
  });

  const active = snap.connection !== "idle" && snap.connection !== "failed";
  const start = async () => {
    if (!conversation) return;
    localStorage.setItem("accessKey", accessKey);
    await conversation.start(accessKey, snap.deviceId);
  };
  const needsKey = snap.needsKey;

  return (
    <main className="mx-auto flex min-h-full max-w-6xl flex-col gap-4 p-3 md:p-6">
      <header className="flex flex-wrap items-center justify-between gap-2">
        <h1 className="text-lg font-semibold">Avatar</h1>
        <p data-testid="connection" data-state={snap.connection} className="text-sm text-slate-300">
          {CONNECTION_WORDS[snap.connection]}
        </p>
      </header>

      {avatars.data?.avatars.length === 0 && !avatarUrl && (
        <p className="rounded bg-amber-900/60 p-3 text-sm" data-testid="no-avatars">
          No avatar is installed on the server: run scripts/download_models.py, or put GLB files in
          AVATARS_DIR. You can also load your own GLB file below.
        </p>
      )}
      {(snap.error || avatarError || avatars.isError) && (
        <p role="alert" data-testid="error" className="rounded bg-red-900/60 p-3 text-sm">
          {snap.error ?? avatarError ?? "The server cannot be reached. Check the address and that the service is running."}
        </p>
      )}

      <div className="grid flex-1 gap-4 md:grid-cols-[3fr_2fr]">
        <section className="relative aspect-[4/5] overflow-hidden rounded-xl bg-slate-900 md:aspect-auto md:min-h-[560px]">
          <div ref={avatarNode} data-testid="avatar" className="absolute inset-0" />
          {progress !== null && progress < 1 && (
            <div className="absolute inset-x-6 bottom-6" data-testid="avatar-progress">
              <p className="mb-1 text-xs text-slate-300">Loading the avatar… {Math.round(progress * 100)}%</p>
              <div className="h-1.5 rounded bg-slate-700"><div className="h-1.5 rounded bg-sky-400" style={{ width: `${progress * 100}%` }} /></div>
            </div>
          )}
          <span data-testid="avatar-state" className="absolute left-3 top-3 rounded-full bg-slate-800/80 px-3 py-1 text-xs">
            {STATE_WORDS[snap.avatarState]}
          </span>
        </section>

        <section className="flex min-h-0 flex-col gap-3">
          <div className="flex flex-wrap items-center gap-2">
            {!active ? (
              <button data-testid="start" onClick={start} disabled={!conversation}
                className="rounded-lg bg-sky-500 px-4 py-2 font-medium text-slate-950 disabled:opacity-40">
                Start conversation
              </button>
            ) : (
              <button data-testid="stop" onClick={() => conversation?.stop()} className="rounded-lg bg-slate-700 px-4 py-2">
                End conversation
              </button>
            )}
            <button data-testid="mute" disabled={!active} onClick={() => conversation?.setMuted(!snap.muted)}
              className="rounded-lg bg-slate-700 px-4 py-2 disabled:opacity-40" aria-pressed={snap.muted}>
              {snap.muted ? "Unmute microphone" : "Mute microphone"}
            </button>
            <Meter conversation={conversation} />
          </div>
          {/* below the buttons, not above the page: a warning that comes with the connection
              would otherwise move the buttons just as the person goes to press one */}
          {snap.warning && <p className="rounded bg-amber-900/60 p-3 text-sm" data-testid="warning">{snap.warning}</p>}
          {snap.notice && <p role="status" className="rounded bg-amber-900/60 p-3 text-sm" data-testid="notice">{snap.notice}</p>}

          <div className="grid gap-2 text-sm sm:grid-cols-2">
            <label className="flex flex-col gap-1">
              <span className="text-slate-400">Microphone</span>
              <select className="rounded bg-slate-800 p-2" value={snap.deviceId ?? ""} disabled={!active}
                onChange={(e) => conversation?.useDevice(e.target.value)}>
                {snap.devices.length === 0 && <option value="">Default microphone</option>}
                {snap.devices.map((d) => <option key={d.deviceId} value={d.deviceId}>{d.label || "Microphone"}</option>)}
              </select>
            </label>
            <label className="flex flex-col gap-1">
              <span className="text-slate-400">Avatar</span>
              <select data-testid="avatar-choice" className="rounded bg-slate-800 p-2" value={avatarUrl ?? ""}
                onChange={(e) => chooseAvatar(e.target.value)}>
                {avatars.data?.avatars.map((a) => <option key={a.name} value={a.url}>{a.name}</option>)}
                {avatarUrl?.startsWith("blob:") && <option value={avatarUrl}>Your file</option>}
              </select>
            </label>
            {voices && voices.voices.length > 0 && (
              <label className="flex flex-col gap-1">
                <span className="text-slate-400">Voice (from the next reply)</span>
                <select data-testid="voice-choice" className="rounded bg-slate-800 p-2" value={snap.voice ?? voices.default}
                  disabled={!conversation} onChange={(e) => void conversation?.setVoice(e.target.value)}>
                  {voices.voices.map((v) => <option key={v} value={v}>{v}</option>)}
                </select>
              </label>
            )}
            <label className="flex flex-col gap-1">
              <span className="text-slate-400">Your own avatar (GLB file)</span>
              <input type="file" accept=".glb,model/gltf-binary" className="text-xs"
                onChange={(e) => { const f = e.target.files?.[0]; if (f) chooseAvatar(URL.createObjectURL(f)); }} />
            </label>
            {(needsKey || accessKey) && (
              <label className="flex flex-col gap-1">
                <span className="text-slate-400">Access key</span>
                <input type="password" className="rounded bg-slate-800 p-2" value={accessKey}
                  onChange={(e) => setAccessKey(e.target.value)} autoComplete="current-password" />
              </label>
            )}
          </div>

          <Transcript lines={snap.lines} speaking={snap.speaking} />
          <ChatBox conversation={conversation} connected={snap.connection === "connected"} error={snap.chatError} />
          <Latency rows={snap.latencies} />
        </section>
      </div>
    </main>
  );
}

/** Typing instead of speaking: the bot answers aloud. A refused message stays in the box. */
function ChatBox({ conversation, connected, error }: { conversation: Conversation | null; connected: boolean; error: string | null }) {
  const [text, setText] = useState("");
  const send = async (e: FormEvent) => {
    e.preventDefault();
    if (await conversation?.sendText(text)) setText("");
  };
  return (
    <form onSubmit={send} className="flex flex-col gap-1" data-testid="chat">
      <div className="flex gap-2">
        <label className="sr-only" htmlFor="chat-text">Type a message</label>
        <input id="chat-text" data-testid="chat-text" className="min-w-0 flex-1 rounded bg-slate-800 p-2 text-sm"
          placeholder={connected ? "Type a message and press Enter" : "Start the conversation to type"}
          value={text} onChange={(e) => setText(e.target.value)} disabled={!connected} autoComplete="off" />
        <button type="submit" data-testid="chat-send" disabled={!connected || !text.trim()}
          className="rounded-lg bg-slate-700 px-4 py-2 text-sm disabled:opacity-40">Send</button>
      </div>
      {error && <p role="alert" data-testid="chat-error" className="text-sm text-amber-300">{error}</p>}
    </form>
  );
}

const silent = () => 0;

/** Re-renders alone, at the level's pace: the rest of the page does not follow the microphone. */
function Meter({ conversation }: { conversation: Conversation | null }) {
  const level = useSyncExternalStore(conversation?.subscribeLevel ?? noSubscribe,
    conversation?.micLevel ?? silent, silent);
  const width = Math.min(1, level * 8);
  return (
    <div className="h-2 w-28 rounded bg-slate-700" role="meter" aria-label="Microphone level" aria-valuenow={Math.round(width * 100)}>
      <div className="h-2 rounded bg-emerald-400 transition-[width] duration-75" style={{ width: `${width * 100}%` }} />
    </div>
  );
}

/** Re-renders only when a line is added or the spoken word moves (memo). */
const Transcript = memo(function Transcript({ lines, speaking }: { lines: ChatLine[]; speaking: Snapshot["speaking"] }) {
  const box = useRef<HTMLDivElement>(null);
  // The transcript scrolls inside its own box: scrolling the page to its end would take the
  // avatar off a phone's screen at every new line.
  useEffect(() => { if (box.current) box.current.scrollTop = box.current.scrollHeight; }, [lines.length]);
  return (
    <div ref={box} data-testid="transcript" className="max-h-72 min-h-48 flex-1 overflow-y-auto rounded-xl bg-slate-900 p-3 text-sm md:max-h-[420px]">
      {lines.length === 0 && <p className="text-slate-500">Press “Start conversation” and say hello.</p>}
      {lines.map((l) => (
        <p key={l.id} data-role={l.role} className={`mb-2 ${l.role === "user" ? "text-slate-300" : "text-slate-100"}`}>
          <span className="mr-2 text-xs uppercase text-slate-500">{l.role === "user" ? "You" : "Avatar"}</span>
          {l.role === "bot" && l.words
            ? l.words.map((w, i) => {
                const on = speaking?.turnId !== undefined && l.id === `b-${speaking.turnId}` && speaking.index === i;
                return <span key={i} data-testid="bot-word" data-active={on || undefined}
                  className={on ? "rounded bg-sky-500/40" : undefined}>{w} </span>;
              })
            : <span className={l.final ? undefined : "italic text-slate-400"}>{l.text}</span>}
        </p>
      ))}
    </div>
  );
});

function Latency({ rows }: { rows: Snapshot["latencies"] }) {
  if (rows.length === 0) return null;
  return (
    <table data-testid="latency" className="w-full text-left text-xs text-slate-400">
      <thead><tr><th>Turn</th><th title="end of your speech → first audible reply">Response</th><th title="first mouth shape − first audible sample; + means the mouth is late">Lip-sync</th></tr></thead>
      <tbody>
        {rows.map((r, i) => (
          <tr key={r.turnId}><td>{i + 1}</td><td>{fmt(r.responseMs)}</td><td>{r.lipSyncMs === null ? "–" : `${r.lipSyncMs > 0 ? "+" : ""}${r.lipSyncMs} ms`}</td></tr>
        ))}
      </tbody>
    </table>
  );
}

const fmt = (ms: number | null) => (ms === null ? "–" : `${ms} ms`);
const noSubscribe = () => () => {};
const idleSnapshot = () => IDLE;
