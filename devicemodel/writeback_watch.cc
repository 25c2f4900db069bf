#include "devicemodel/writeback_watch.h"

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <utility>

#include "common/thread_annotations.h"
#include "common/thread_name.h"

namespace romulus::devicemodel {

using std::chrono::duration_cast;
using std::chrono::milliseconds;

// Shared by the watch and its thread, so that a thread left behind by a
// hung device (the watch destroyed meanwhile) still has its files and
// closes them once the flush returns.
struct WritebackWatch::Flusher {
  struct File {
    std::string path;
    int fd = -1;
  };
  std::vector<File> files;  // set before the thread starts; fds closed last

  std::mutex mu;
  std::condition_variable cv;
  uint64_t asked GUARDED_BY(mu) = 0;     // rounds Check asked for
  uint64_t answered GUARDED_BY(mu) = 0;  // rounds the thread finished
  bool quit GUARDED_BY(mu) = false;
  size_t flushing GUARDED_BY(mu) = 0;  // the file of the round in progress
  transport::Clock::time_point round_began GUARDED_BY(mu);
  Status result GUARDED_BY(mu);       // of round `answered`
  bool abandoned GUARDED_BY(mu) = false;  // its Check timed out: report the result later

  ~Flusher() {
    for (File& f : files) {
      if (f.fd >= 0) ::close(f.fd);
    }
  }

  bool busy() const REQUIRES(mu) { return answered != asked; }

  void Run() {
    std::unique_lock<std::mutex> lock(mu);
    for (;;) {
      cv.wait(lock, [&]() REQUIRES(mu) { return quit || busy(); });
      if (quit) return;
      lock.unlock();
      Status first = FlushAll();
      lock.lock();
      result = first;
      answered = asked;
      cv.notify_all();
    }
  }

  Status FlushAll() {
    Status first;
    for (size_t i = 0; i < files.size(); ++i) {
      {
        std::lock_guard<std::mutex> l(mu);
        flushing = i;
      }
      int rc;
      do {
        rc = ::fdatasync(files[i].fd);
      } while (rc != 0 && errno == EINTR);
      if (rc != 0 && first.ok()) {
        // Short, the errno early: it travels in a BYE of at most 256 bytes.
        first = Status::Storage(files[i].path + ": " + std::strerror(errno) +
                                ": a write the guest saw complete never reached it (QEMU's flush at stop ignored "
                                "the error)");
      }
    }
    return first;
  }

  Status Hung() const REQUIRES(mu) {
    const auto ms = duration_cast<milliseconds>(transport::Clock::now() - round_began).count();
    return Status::Timeout(files[flushing].path + ": fdatasync has not returned for " + std::to_string(ms) +
                           " ms (the device hangs): whether the guest's writes reached it is unknown");
  }
};

Result<WritebackWatch> WritebackWatch::Open(const std::vector<std::string>& paths) {
  auto flusher = std::make_shared<Flusher>();
  for (const std::string& p : paths) {
    // Read-only: this process never writes the guest's disk. fsync of a
    // read-only descriptor is allowed and reports the file's errors all the
    // same (they belong to the file, sampled per descriptor at open).
    int fd = ::open(p.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) return Status::FromErrno("opening emulated disk file " + p + " to watch its write-back", errno);
    flusher->files.push_back(Flusher::File{p, fd});
  }
  WritebackWatch w;
  if (paths.empty()) return w;
  w.flusher_ = flusher;
  // No signal for this thread: a SIGTERM meant for the process's signal
  // watcher (`replicate` starts it later) must not take the default action
  // here, which would end the process in the middle of an epoch.
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, &old);
  w.thread_ = std::thread([f = std::move(flusher)] {
    NameThisThread("dm-flush");
    f->Run();
  });
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
  return w;
}

WritebackWatch::WritebackWatch(WritebackWatch&& o) noexcept
    : flusher_(std::move(o.flusher_)), thread_(std::move(o.thread_)) {}

WritebackWatch& WritebackWatch::operator=(WritebackWatch&& o) noexcept {
  if (this != &o) {
    Stop();
    flusher_ = std::move(o.flusher_);
    thread_ = std::move(o.thread_);
  }
  return *this;
}

WritebackWatch::~WritebackWatch() { Stop(); }

size_t WritebackWatch::size() const { return flusher_ ? flusher_->files.size() : 0; }

void WritebackWatch::Stop() {
  if (!thread_.joinable()) return;
  bool hung;
  {
    std::lock_guard<std::mutex> lock(flusher_->mu);
    flusher_->quit = true;
    hung = flusher_->busy();
  }
  flusher_->cv.notify_all();
  // A thread inside fdatasync of a hung device cannot be joined in any
  // bounded time; it quits on its own once the device answers.
  if (hung) {
    thread_.detach();
  } else {
    thread_.join();
  }
  flusher_.reset();
}

Status WritebackWatch::Check(transport::Deadline deadline) {
  if (!flusher_) return Status::Ok();
  Flusher& f = *flusher_;
  std::unique_lock<std::mutex> lock(f.mu);
  if (f.busy()) return f.Hung();
  // A round whose Check gave up on it: its error, if any, is still news.
  Status late;
  if (f.abandoned) {
    f.abandoned = false;
    late = f.result;
  }
  ++f.asked;
  f.flushing = 0;
  f.round_began = transport::Clock::now();
  f.cv.notify_all();
  if (!f.cv.wait_until(lock, deadline, [&]() REQUIRES(f.mu) { return !f.busy(); })) {
    f.abandoned = true;
    return late.ok() ? f.Hung() : late;
  }
  if (late.ok()) return f.result;
  if (f.result.ok()) return late;
  // Both rounds lost writes; each error is read once, so neither is dropped.
  return Status::Storage(late.message() + "; then " + f.result.message());
}

}  // namespace romulus::devicemodel
