// eslint config for the dashboard's inline script (extracted by .ci/lint_page.py).
// Correctness rules only, plus the readability rules issue 18 asked for; no formatter.
export default [
  {
    files: ["**/*.js"],
    languageOptions: {
      ecmaVersion: 2022,
      sourceType: "script",
      globals: {
        window: "readonly", document: "readonly", location: "readonly", history: "readonly",
        localStorage: "readonly", fetch: "readonly", console: "readonly", navigator: "readonly",
        setTimeout: "readonly", clearTimeout: "readonly", setInterval: "readonly",
        requestAnimationFrame: "readonly", cancelAnimationFrame: "readonly",
        getComputedStyle: "readonly", matchMedia: "readonly", innerWidth: "readonly",
        innerHeight: "readonly", devicePixelRatio: "readonly",
        URLSearchParams: "readonly", TextEncoder: "readonly", TextDecoder: "readonly",
        EventSource: "readonly", Intl: "readonly", Node: "readonly", Blob: "readonly",
        URL: "readonly", IntersectionObserver: "readonly", ResizeObserver: "readonly",
      },
    },
    rules: {
      "no-undef": "error",
      "no-unused-vars": ["error", { args: "none", caughtErrors: "none" }],
      "no-redeclare": "error",
      "no-dupe-keys": "error",
      "no-unreachable": "error",
      "no-const-assign": "error",
      "no-self-assign": "error",
      "no-shadow-restricted-names": "error",
      "no-use-before-define": ["error", { functions: false, classes: false, variables: false }],
      "eqeqeq": ["error", "always", { null: "ignore" }],
      "no-eval": "error",
      "no-implied-eval": "error",
      "no-new-func": "error",
      "strict": ["error", "function"],
    },
  },
  {
    // The chart code (the one section that draws) is held to readability rules too: one
    // statement per line and no one-letter names (loop indexes i/j and data coordinates x/y excepted).
    files: ["**/charts.js"],
    rules: {
      "no-undef": "off",
      "no-unused-vars": "off",
      "strict": "off",
      "max-statements-per-line": ["error", { max: 1 }],
      "id-length": ["error", { min: 2, properties: "never", exceptions: ["i", "j", "x", "y"] }],
    },
  },
];
