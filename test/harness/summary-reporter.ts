/**
 * Prints one plain closing line, `vitest: N passed, N failed, N skipped` (and `, N unhandled
 * errors` when there were any: they fail the run though every test passed), after the default
 * reporter's coloured summary, so CI logs can be read by tools that look for it.
 */
import type { Reporter, TestModule } from 'vitest/node';

export default class SummaryReporter implements Reporter {
  onTestRunEnd(testModules: readonly TestModule[], unhandledErrors: readonly unknown[]): void {
    let passed = 0;
    let failed = 0;
    let skipped = 0;
    for (const module of testModules) {
      if (module.state() === 'failed' && [...module.children.allTests()].length === 0) failed++; // a file that failed to load
      for (const test of module.children.allTests()) {
        const state = test.result().state;
        if (state === 'passed') passed++;
        else if (state === 'failed') failed++;
        else skipped++;
      }
    }
    const unhandled = unhandledErrors.length > 0 ? `, ${unhandledErrors.length} unhandled errors` : '';
    process.stdout.write(`\nvitest: ${passed} passed, ${failed} failed, ${skipped} skipped${unhandled}\n`);
  }
}
