/**
 * A lazy, shared result: `task` starts on the first call and every caller gets the same promise — until it
 * rejects. A rejection is not kept, so a later call tries again (the file was being copied, the disk was full) instead
 * of failing forever in a long-running process.
 */
export function memoizeSuccess<T>(task: () => Promise<T>): () => Promise<T> {
  let pending: Promise<T> | undefined;
  return () => {
    if (pending) return pending;
    const started = task();
    pending = started;
    started.catch(() => {
      if (pending === started) pending = undefined;
    });
    return started;
  };
}
