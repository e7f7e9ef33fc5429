// TalkingHead ships no type declarations; we use a small, pinned part of it (avatar/driver.ts).
declare module "@met4citizen/talkinghead" {
  export class TalkingHead {
    constructor(node: HTMLElement, opt?: Record<string, unknown>);
    [key: string]: any; // eslint-disable-line @typescript-eslint/no-explicit-any
  }
}
declare module "@met4citizen/talkinghead/modules/lipsync-en.mjs" {
  export class LipsyncEn {
    preProcessText(s: string): string;
    wordsToVisemes(w: string): { visemes: string[]; times: number[]; durations: number[] };
  }
}
