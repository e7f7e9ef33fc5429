// ESLint for the web client: typescript-eslint's recommended rules and React's rules of hooks.
import js from "@eslint/js";
import reactHooks from "eslint-plugin-react-hooks";
import globals from "globals";
import tseslint from "typescript-eslint";

export default tseslint.config(
  { ignores: ["out/", ".next/", "src/gen/", "public/", "next-env.d.ts"] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    files: ["**/*.{ts,tsx}"],
    plugins: { "react-hooks": reactHooks },
    rules: { ...reactHooks.configs.recommended.rules },
    languageOptions: { globals: { ...globals.browser } },
  },
  {
    files: ["e2e/**/*.mjs", "scripts/**/*.mjs", "*.config.*"],
    languageOptions: { globals: { ...globals.node, ...globals.browser } },
  },
);
