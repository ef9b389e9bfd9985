"""Constants and page scripts shared by the browser tests."""

E2E_FORMATS = ("int8", "int4", "int2")
WAIT_FOR_DEMO = """async () => {
  for (let i = 0; i < 3000; i++) {
    const d = window.ulpqDemo;
    if (d && d.status !== 'loading') {
      const facts = Object.fromEntries([...document.querySelectorAll('#facts dd')].map((e) => [e.id, e.textContent]));
      return { status: d.status, error: d.error, result: d.result, progress: d.progress,
               shownError: document.getElementById('error').textContent, facts };
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  return { status: 'timeout' };
}"""
PROCESS = "async (x) => window.ulpqDemo.model.process(x)"
