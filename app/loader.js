// Trunk initializer (data-initializer in index.html): drives the static loading screen
// while the WebAssembly downloads (2.9 MB gzipped: seconds on a slow school network),
// then removes it; on failure it says so in plain words instead of a blank page.
export default function loader() {
  const screen = document.getElementById("loading");
  const bar = document.getElementById("loading-bar");
  const text = document.getElementById("loading-text");
  return {
    onProgress: ({ current, total }) => {
      if (!bar || !text) return;
      if (total > 0) {
        bar.max = total;
        bar.value = Math.min(current, total);
        text.textContent = `Loading HyperAT Studio… ${Math.round((100 * Math.min(current, total)) / total)}%`;
      } else {
        bar.removeAttribute("value");
      }
    },
    onSuccess: () => screen?.remove(),
    onFailure: (error) => {
      if (text) text.textContent = `HyperAT Studio could not start: ${error?.message ?? error}. Reload the page, or use a recent browser with WebAssembly.`;
      bar?.remove();
      screen?.classList.add("failed");
    },
  };
}
