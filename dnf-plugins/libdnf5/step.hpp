// How rpmcow's libdnf5 plugins run rpmcow's Python steps (cow.cpp,
// sticky_vendor.cpp): posix_spawn with a fixed environment (nothing from
// dnf5's), stdout captured or discarded, stderr dnf5's own.
#pragma once

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <string>
#include <vector>

namespace {

inline char ENV_PATH[] = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
inline char ENV_LANG[] = "LC_ALL=C.UTF-8";
inline char * STEP_ENV[] = {ENV_PATH, ENV_LANG, nullptr};

inline std::vector<char *> c_argv(const std::vector<std::string> & argv) {
    std::vector<char *> args;
    for (const auto & a : argv)
        args.push_back(const_cast<char *>(a.c_str()));
    args.push_back(nullptr);
    return args;
}

// start a step in the background, its stdin a pipe whose writing end is
// returned in *in (closing it tells the step to finish); its pid, or -1
inline pid_t start_step(const std::vector<std::string> & argv, int * in) {
    int p[2];
    if (pipe2(p, O_CLOEXEC) < 0)
        return -1;
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, p[0], 0);
    posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
    auto args = c_argv(argv);
    pid_t pid;
    int rc = posix_spawn(&pid, args[0], &fa, nullptr, args.data(), STEP_ENV);
    posix_spawn_file_actions_destroy(&fa);
    close(p[0]);
    if (rc != 0) {
        close(p[1]);
        return -1;
    }
    *in = p[1];
    return pid;
}

inline void wait_step(pid_t pid) {
    int status;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
}

// argv -> the step's stdout (its stderr is dnf5's); false if it could not run
inline bool run_step(const std::vector<std::string> & argv, std::string & out) {
    int p[2];
    if (pipe2(p, O_CLOEXEC) < 0)
        return false;
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, p[1], 1);
    auto args = c_argv(argv);
    pid_t pid;
    int rc = posix_spawn(&pid, args[0], &fa, nullptr, args.data(), STEP_ENV);
    posix_spawn_file_actions_destroy(&fa);
    close(p[1]);
    if (rc != 0) {
        close(p[0]);
        return false;
    }
    char buf[4096];
    for (;;) {
        ssize_t n = read(p[0], buf, sizeof(buf));
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        out.append(buf, static_cast<size_t>(n));
    }
    close(p[0]);
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}


// `python -I` running module `module` with args, and `path` (a directory put
// first on sys.path, from the plugin's .conf only) if not empty
inline std::vector<std::string> python_step(const std::string & python, const std::string & path,
                                            const char * module) {
    std::vector<std::string> argv{python, "-I"};
    if (path.empty()) {
        argv.insert(argv.end(), {"-m", module});
    } else {
        argv.insert(argv.end(), {"-c",
            std::string("import runpy, sys; sys.path.insert(0, sys.argv[1]); del sys.argv[1]; "
                        "runpy.run_module('") + module + "', run_name='__main__', alter_sys=True)",
            path});
    }
    return argv;
}

}  // namespace
