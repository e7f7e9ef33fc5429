import type { NextConfig } from "next";

// A static export: the bot's HTTP server serves web/out, so page, API and avatars share one origin
// and nothing is fetched from anywhere else.
const config: NextConfig = {
  output: "export",
  reactStrictMode: true,
  images: { unoptimized: true },
  devIndicators: false,
};
export default config;
