// What the running kernel allows, for tests that expect the data plane to pick a path accordingly.
import { readFileSync } from 'node:fs';

/** Whether root may use io_uring here (kernel.io_uring_disabled 2 refuses everyone; before Linux 6.6 no switch). */
export function uringAllowed(): boolean {
  try {
    return readFileSync('/proc/sys/kernel/io_uring_disabled', 'utf8').trim() !== '2';
  } catch {
    return true;
  }
}
