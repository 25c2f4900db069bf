#include "disk/exported_disk.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <fstream>
#include <thread>

#include <spdlog/spdlog.h>

#include "common/subprocess.h"
#include "disk/export_socket.h"

namespace romulus::disk {

namespace {

using Clock = std::chrono::steady_clock;

// A log of the export's that says it serves.
bool LogSaysReady(const std::string& path) { return !LastLineWith(path, "' ready: ").empty(); }

}  // namespace

pid_t NbdClientPid(const std::string& sysfs_block, int k) {
  std::ifstream in(sysfs_block + "/nbd" + std::to_string(k) + "/pid");
  long long v = -1;
  if (!(in >> v) || v <= 0 || v > INT32_MAX) return -1;
  return static_cast<pid_t>(v);
}

std::vector<int> FreeNbdDevices(const std::string& sysfs_block) {
  std::vector<int> free;
  DIR* d = ::opendir(sysfs_block.c_str());
  if (!d) return free;
  while (struct dirent* e = ::readdir(d)) {
    const std::string name = e->d_name;
    if (name.size() < 4 || name.compare(0, 3, "nbd") != 0) continue;
    if (!std::all_of(name.begin() + 3, name.end(), [](char c) { return c >= '0' && c <= '9'; })) continue;
    if (name.size() > 9) continue;  // not a device number we would make
    struct stat st;
    // A connected device has a `pid` attribute (the client that configured it).
    if (::stat((sysfs_block + "/" + name + "/pid").c_str(), &st) == 0) continue;
    free.push_back(std::stoi(name.substr(3)));
  }
  ::closedir(d);
  std::sort(free.begin(), free.end());
  return free;
}

namespace {

Result<uint32_t> ReadKib(const std::string& path) {
  std::ifstream in(path);
  long long v = -1;
  if (!(in >> v) || v <= 0 || v > UINT32_MAX) return Status::IoError("cannot read a size in KiB from " + path);
  return static_cast<uint32_t>(v);
}

}  // namespace

Result<uint32_t> RaiseNbdMaxRequest(const std::string& sysfs_block, int k, uint32_t kib) {
  const std::string queue = sysfs_block + "/nbd" + std::to_string(k) + "/queue/";
  auto now = ReadKib(queue + "max_sectors_kb");
  if (!now.ok()) return now.status();
  auto hw = ReadKib(queue + "max_hw_sectors_kb");
  if (!hw.ok()) return hw.status();
  const uint32_t want = std::min(kib, *hw);
  if (*now >= want) return *now;
  {
    std::ofstream out(queue + "max_sectors_kb");
    out << want << "\n";
    out.flush();
    if (!out) return Status::IoError("cannot write " + std::to_string(want) + " to " + queue + "max_sectors_kb");
  }
  auto after = ReadKib(queue + "max_sectors_kb");
  if (!after.ok()) return after.status();
  if (*after != want) {
    return Status::IoError(queue + "max_sectors_kb is " + std::to_string(*after) + " after writing " +
                           std::to_string(want));
  }
  return *after;
}

Result<std::unique_ptr<ExportedDisk>> ExportedDisk::Start(const std::string& image, const std::string& vdev,
                                                        const ExportedDiskOptions& options) {
  std::unique_ptr<ExportedDisk> d(new ExportedDisk());
  d->options_ = options;
  d->nbd_socket_ = image + ".nbd";
  d->tap_socket_ = image + ".tap";
  d->log_ = image + ".export.log";
  // Said before anything starts: a path too long for a UNIX socket, or an
  // export someone already runs on this image (two would each log half of
  // the guest's writes).
  ROMULUS_RETURN_IF_ERROR(CheckUnixSocketPath(d->nbd_socket_, "NBD socket"));
  ROMULUS_RETURN_IF_ERROR(CheckUnixSocketPath(d->tap_socket_, "tap socket"));
  if (options.romulus.empty()) return Status::InvalidArgument("no romulus binary to run disk-export with");
  // No device, no export: the guest waits paused for all of this.
  const std::vector<int> free_devices = FreeNbdDevices(options.sysfs_block);
  if (free_devices.empty()) {
    return Status::IoError("no free NBD device in " + options.sysfs_block + " (is the nbd module loaded?)");
  }

  d->export_pid_ = Spawn({options.romulus, "disk-export", "--store", image, "--name", vdev, "--nbd-socket",
                          d->nbd_socket_, "--tap-socket", d->tap_socket_},
                         d->log_, SpawnMode::kDetached);
  if (d->export_pid_ < 0) return Status::IoError("cannot run " + options.romulus + " disk-export");
  const auto deadline = Clock::now() + options.ready_wait;
  while (!LogSaysReady(d->log_)) {
    int st = 0;
    if (WaitExit(d->export_pid_, std::chrono::milliseconds(0), &st)) {
      d->export_pid_ = -1;
      return Status::IoError("the disk export of " + image + " exited before it was ready: " + LastLineWith(d->log_, "") +
                             " (" + d->log_ + ")");
    }
    if (Clock::now() >= deadline) {
      return Status::Timeout("the disk export of " + image + " was not ready after " +
                             std::to_string(options.ready_wait.count()) + " ms (" + d->log_ + ")");
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }

  // The first free device; another client may take it between the look and
  // the connect, so a few are tried.
  d->client_log_ = image + ".nbd-client.log";
  const std::string& client_log = d->client_log_;
  std::string last_error;
  int tried = 0;
  for (int k : free_devices) {
    if (++tried > 4) break;
    const std::string dev = options.dev_dir + "/nbd" + std::to_string(k);
    pid_t client = -1;
    const int rc = RunToExit({options.nbd_client, "-unix", d->nbd_socket_, dev, "-N", vdev}, client_log,
                             options.client_timeout, &client);
    if (rc == 0) {
      d->device_ = dev;
      d->connected_ = true;
      if (options.max_request_kib > 0) {
        // Only throughput depends on it: the guest's disk works either way.
        auto kib = RaiseNbdMaxRequest(options.sysfs_block, k, options.max_request_kib);
        if (!kib.ok()) {
          spdlog::warn("{}: requests stay at the kernel's size limit: {}", dev, kib.status().message());
        } else {
          spdlog::info("{}: requests of up to {} KiB", dev, *kib);
        }
      }
      break;
    }
    last_error = options.nbd_client + " -unix " + d->nbd_socket_ + " " + dev + " -N " + vdev +
                 (rc < 0 ? ": did not run, was killed or hung" : ": exit " + std::to_string(rc)) + ": " + LastLineWith(client_log, "");
    // A client killed (or failed) after the kernel took its configuration
    // leaves the device connected to our export with nobody to use it: the
    // device's pid attribute names our client then, and only then is it
    // ours to disconnect (another client may have taken the device meanwhile).
    if (client > 0 && NbdClientPid(options.sysfs_block, k) == client) {
      const int drc = RunToExit({options.nbd_client, "-d", dev}, client_log, options.client_timeout);
      last_error += drc == 0 ? " (" + dev + " disconnected again)"
                             : " (" + dev + " stays connected: nbd-client -d " + dev + " failed; disconnect it by hand)";
    }
  }
  if (!d->connected_) return Status::IoError(last_error);
  struct stat st;
  if (::stat(d->device_.c_str(), &st) != 0) return Status::StorageErrno("stat " + d->device_, errno);
  d->major_ = ::major(st.st_rdev);
  d->minor_ = ::minor(st.st_rdev);
  // Opened once: blkback's wait polls the size every few ms.
  d->fd_ = ::open(d->device_.c_str(), O_RDONLY | O_CLOEXEC);
  if (d->fd_ < 0) return Status::StorageErrno("opening " + d->device_, errno);
  return d;
}

Result<uint64_t> ExportedDisk::Sectors() const {
  uint64_t bytes = 0;
  if (::ioctl(fd_, BLKGETSIZE64, &bytes) != 0) return Status::StorageErrno("BLKGETSIZE64 on " + device_, errno);
  return bytes / 512;
}

void ExportedDisk::TearDown() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
  if (connected_) RunToExit({options_.nbd_client, "-d", device_}, client_log_, options_.client_timeout);
  connected_ = false;
  StopAndReap(export_pid_, std::chrono::milliseconds(5000));
  export_pid_ = -1;
}

ExportedDisk::~ExportedDisk() {
  if (!served_) {
    TearDown();
  } else if (fd_ >= 0) {
    ::close(fd_);
  }
}

}  // namespace romulus::disk
