// Locking annotations in the LevelDB style: which mutex guards a field,
// which mutex a function expects held (or not held), in which order two
// mutexes are taken. They are written where state is shared between threads
// so the rule sits next to the field instead of in a comment that drifts.
//
// Under clang they become its thread-safety attributes, which
// -Wthread-safety checks; under GCC (what Romulus builds with, CMakeLists.txt)
// they expand to nothing and are documentation with a fixed spelling. Clang
// only checks a mutex whose type is declared a capability: libc++'s std::mutex
// and std::lock_guard are with -D_LIBCPP_ENABLE_THREAD_SAFETY_ANNOTATIONS
// (its std::unique_lock is not, so a unique_lock region reads as unlocked),
// libstdc++'s are not, so with libstdc++ nothing is enforced.
//
// A condition-variable predicate runs under the lock its caller holds, which
// the analysis cannot see from inside the lambda: write it as
// [&]() REQUIRES(mu_) { return done_; }.
#pragma once

#if defined(__clang__)
#define ROMULUS_THREAD_ANNOTATION(x) __attribute__((x))
#else
#define ROMULUS_THREAD_ANNOTATION(x)
#endif

// A data member only read or written with the given mutex held.
#ifndef GUARDED_BY
#define GUARDED_BY(x) ROMULUS_THREAD_ANNOTATION(guarded_by(x))
#endif

// A pointer member whose pointee (not the pointer) the mutex guards.
#ifndef PT_GUARDED_BY
#define PT_GUARDED_BY(x) ROMULUS_THREAD_ANNOTATION(pt_guarded_by(x))
#endif

// Lock order: this mutex is taken after (before) the listed ones.
#ifndef ACQUIRED_AFTER
#define ACQUIRED_AFTER(...) ROMULUS_THREAD_ANNOTATION(acquired_after(__VA_ARGS__))
#endif
#ifndef ACQUIRED_BEFORE
#define ACQUIRED_BEFORE(...) ROMULUS_THREAD_ANNOTATION(acquired_before(__VA_ARGS__))
#endif

// The caller must hold the mutex (exclusively, or at least shared).
#ifndef REQUIRES
#define REQUIRES(...) ROMULUS_THREAD_ANNOTATION(requires_capability(__VA_ARGS__))
#endif
#ifndef REQUIRES_SHARED
#define REQUIRES_SHARED(...) ROMULUS_THREAD_ANNOTATION(requires_shared_capability(__VA_ARGS__))
#endif

// The caller must not hold the mutex: the function takes it itself.
#ifndef EXCLUDES
#define EXCLUDES(...) ROMULUS_THREAD_ANNOTATION(locks_excluded(__VA_ARGS__))
#endif

// The function returns with the mutex held / released by it.
#ifndef ACQUIRE
#define ACQUIRE(...) ROMULUS_THREAD_ANNOTATION(acquire_capability(__VA_ARGS__))
#endif
#ifndef RELEASE
#define RELEASE(...) ROMULUS_THREAD_ANNOTATION(release_capability(__VA_ARGS__))
#endif
#ifndef TRY_ACQUIRE
#define TRY_ACQUIRE(...) ROMULUS_THREAD_ANNOTATION(try_acquire_capability(__VA_ARGS__))
#endif

// For a type that is itself a lock, or a RAII holder of one.
#ifndef CAPABILITY
#define CAPABILITY(x) ROMULUS_THREAD_ANNOTATION(capability(x))
#endif
#ifndef SCOPED_CAPABILITY
#define SCOPED_CAPABILITY ROMULUS_THREAD_ANNOTATION(scoped_lockable)
#endif

// The function returns a reference to the given mutex; or checks at run time
// that it is held.
#ifndef LOCK_RETURNED
#define LOCK_RETURNED(x) ROMULUS_THREAD_ANNOTATION(lock_returned(x))
#endif
#ifndef ASSERT_CAPABILITY
#define ASSERT_CAPABILITY(x) ROMULUS_THREAD_ANNOTATION(assert_capability(x))
#endif

// Opts one function out of the analysis; say why next to it.
#ifndef NO_THREAD_SAFETY_ANALYSIS
#define NO_THREAD_SAFETY_ANALYSIS ROMULUS_THREAD_ANNOTATION(no_thread_safety_analysis)
#endif
