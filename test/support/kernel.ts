// What the running kernel allows, for tests that expect the data plane to pick a path accordingly.
import { readFileSync } from 'node:fs';
import { release } from 'node:os';

/** Whether root may use io_uring here (kernel.io_uring_disabled 2 refuses everyone; before Linux 6.6 no switch). */
export function uringAllowed(): boolean {
  try {
    return readFileSync('/proc/sys/kernel/io_uring_disabled', 'utf8').trim() !== '2';
  } catch {
    return true;
  }
}

/** Whether the running kernel is Linux `major`.`minor` or later (from uname's release, e.g. 6.18.44-…). */
export function kernelAtLeast(major: number, minor: number): boolean {
  const [maj, min] = release()
    .split('.')
    .map((n) => parseInt(n, 10));
  return maj > major || (maj === major && min >= minor);
}
