// libdnf5 plugin "cow": copy-on-write installs through stock dnf5 and stock rpm.
//
// Thin on purpose: the work is rpmcow's (Python, C core) and the rpm plugin's
// (csrc/rpm_plugin_cow.c, which serves each package's payload itself and
// clones from its extents file).  This plugin runs rpmcow's steps at the
// right hooks and pushes the rpm macros they print into this process, where
// librpm reads them (rpmcow/dnf5cow.py says what each step does):
//
//   goal_resolved    `activate`: the caches and the root clone? then the
//                    macros that make rpm load its cow plugin -- the last hook
//                    before rpm loads its plugins
//   pre_transaction  `prepare`: downloads, dnf5's GPG check and rpm's test
//                    run are done; transcode, judge, plan; %_rpmcow_serve
//   post_transaction / finish   `finish`: what the cache does not keep goes;
//                    the macros are popped
//
// The steps run as `PYTHON -I -m rpmcow.dnf5cow STEP ...` (isolated: nothing
// from the environment), with a fixed environment; `python` and `path` (a
// directory put first on sys.path, for a checkout) come from cow.conf only.
// A step that fails leaves dnf5 to install the stock way; nothing here ever
// fails a transaction.
#include <libdnf5/base/base.hpp>
#include <libdnf5/base/transaction.hpp>
#include <libdnf5/base/transaction_package.hpp>
#include <libdnf5/conf/config_parser.hpp>
#include <libdnf5/plugin/iplugin.hpp>
#include <libdnf5/rpm/package.hpp>
#include <libdnf5/transaction/transaction_item_action.hpp>

#include <rpm/rpmmacro.h>

#include "step.hpp"

#include <dlfcn.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <exception>
#include <map>
#include <set>
#include <string>
#include <vector>

namespace {

constexpr const char * NAME = "cow";
constexpr libdnf5::PluginAPIVersion API{.major = 2, .minor = 1};
constexpr libdnf5::plugin::Version VERSION{0, 1, 0};
const char * const ATTRS[]{"author.name", "description", nullptr};
const char * const ATTR_VALUES[]{"rpmcow", "Install packages copy-on-write (rpmcow).", nullptr};

std::exception_ptr last_exception;

class Cow final : public libdnf5::plugin::IPlugin2_1 {
public:
    Cow(libdnf5::plugin::IPluginData & data, libdnf5::ConfigParser & parser) : IPlugin2_1(data) {
        auto get = [&](const char * key, const char * dflt) {
            return parser.has_option("main", key) ? parser.get_value("main", key) : std::string(dflt);
        };
        python = get("python", "/usr/bin/python3");
        path = get("path", "");
        denylist = get("denylist", "");
        workers = get("workers", "0");
        keep = get("keep", "auto");
        share_tails = get("share_tails", "auto");
    }

    libdnf5::PluginAPIVersion get_api_version() const noexcept override { return API; }
    const char * get_name() const noexcept override { return NAME; }
    libdnf5::plugin::Version get_version() const noexcept override { return VERSION; }
    const char * const * get_attributes() const noexcept override { return ATTRS; }
    const char * get_attribute(const char * name) const noexcept override {
        for (size_t i = 0; ATTRS[i]; ++i)
            if (std::strcmp(name, ATTRS[i]) == 0)
                return ATTR_VALUES[i];
        return nullptr;
    }

    void goal_resolved(const libdnf5::base::Transaction & transaction) override {
        try {
            packages.clear();
            sized.clear();
            std::set<std::string> dirs;
            for (const auto & tp : transaction.get_transaction_packages()) {
                if (!libdnf5::transaction::transaction_item_action_is_inbound(tp.get_action()))
                    continue;
                auto pkg = tp.get_package();
                if (pkg.get_repo_id() == "@commandline")
                    continue;            // no cache of ours: rpm installs it the stock way
                auto file = pkg.get_package_path();
                packages.push_back(file);
                sized.push_back(file + ":" + std::to_string(pkg.get_download_size()));
                dirs.insert(file.substr(0, file.rfind('/')));
            }
            if (packages.empty())
                return;
            std::vector<std::string> argv = step("activate");
            argv.insert(argv.end(), dirs.begin(), dirs.end());
            active = apply(argv);
            if (active) {
                // transcode each package as its download completes
                std::vector<std::string> fargv = step("follow");
                fargv.insert(fargv.end(), {"--workers", workers, "--"});
                fargv.insert(fargv.end(), sized.begin(), sized.end());
                follower = start_step(fargv, &follower_in);
            }
        } catch (...) {
            active = false;              // stock
        }
    }

    void pre_transaction(const libdnf5::base::Transaction &) override {
        stop_follower(false);            // downloads over: it finishes what it started
        if (!active)
            return;
        try {
            std::vector<std::string> argv = step("prepare");
            bool keepcache = get_base().get_config().get_keepcache_option().get_value();
            argv.insert(argv.end(), {"--denylist", denylist, "--workers", workers, "--keep", keep,
                                     "--keepcache", keepcache ? "1" : "0",
                                     "--share-tails", share_tails, "--"});
            argv.insert(argv.end(), packages.begin(), packages.end());
            if (apply(argv))
                served_only();
        } catch (...) {
        }
    }

    void post_transaction(const libdnf5::base::Transaction &) override { done(); }

    void finish() noexcept override { done(); }

private:
    std::vector<std::string> step(const char * name) {
        std::vector<std::string> argv = python_step(python, path, "rpmcow.dnf5cow");
        argv.insert(argv.end(), {name, "--installroot", installroot()});
        return argv;
    }

    std::string installroot() { return get_base().get_config().get_installroot_option().get_value(); }

    // run a step and push the macros it prints; true if it said any
    bool apply(const std::vector<std::string> & argv) {
        std::string out;
        if (!run_step(argv, out))
            return false;
        bool any = false;
        size_t at = 0;
        while (at < out.size()) {
            size_t end = out.find('\n', at);
            std::string line = out.substr(at, end == std::string::npos ? std::string::npos : end - at);
            at = end == std::string::npos ? out.size() : end + 1;
            if (line.rfind("macro ", 0) == 0) {
                size_t sp = line.find(' ', 6);
                if (sp == std::string::npos)
                    continue;
                std::string name = line.substr(6, sp - 6), value = line.substr(sp + 1);
                rpmPushMacro(nullptr, name.c_str(), nullptr, value.c_str(), RMIL_CMDLINE);
                pushed.push_back(name);
                if (name == "__transaction_cow")
                    rpm_plugin = value;
                any = true;
            } else if (line.rfind("private ", 0) == 0) {
                private_dir = line.substr(8);
            }
        }
        return any;
    }

    // what rpm's cow plugin did, per package (it reports once per psm stage)
    // rpm's test run verified every original on this transaction set; the
    // rpm plugin decides whether the real run's second pass reads anything
    // it uses (csrc/rpm_plugin_cow.c: "One verification pass, not two")
    void served_only() {
        if (rpm_plugin.empty())
            return;
        void * so = dlopen(rpm_plugin.c_str(), RTLD_NOW | RTLD_NOLOAD);
        if (so == nullptr)
            return;
        if (auto fn = reinterpret_cast<int (*)(void)>(dlsym(so, "rpmcow_plugin_served_only")))
            fn();
        dlclose(so);
    }

    struct Result {
        unsigned long long cloned = 0, copied = 0;
        bool ok = true;
    };

    std::map<std::string, Result> results() {
        std::map<std::string, Result> out;
        if (rpm_plugin.empty())
            return out;
        // the instance rpm loaded, if it did: never a load of our own
        void * so = dlopen(rpm_plugin.c_str(), RTLD_NOW | RTLD_NOLOAD);
        if (so == nullptr)
            return out;
        using result_fn = int (*)(unsigned, const char **, unsigned long long *,
                                  unsigned long long *, const char **, int *);
        using clear_fn = void (*)(void);
        auto get = reinterpret_cast<result_fn>(dlsym(so, "rpmcow_plugin_result"));
        auto clear = reinterpret_cast<clear_fn>(dlsym(so, "rpmcow_plugin_clear_results"));
        const char *nevra, *why;
        unsigned long long cloned, copied;
        int ok;
        for (unsigned i = 0; get && get(i, &nevra, &cloned, &copied, &why, &ok); i++) {
            Result & r = out[nevra ? nevra : "?"];
            r.cloned += cloned;
            r.copied += copied;
            r.ok = r.ok && ok;
        }
        if (clear)
            clear();
        dlclose(so);
        return out;
    }

    void stop_follower(bool kill_it) noexcept {
        if (follower <= 0)
            return;
        close(follower_in);
        if (kill_it)
            kill(follower, SIGTERM);
        wait_step(follower);
        follower = -1;
    }

    void done() noexcept {
        stop_follower(true);             // the transaction ended before pre_transaction
        if (!active && pushed.empty() && private_dir.empty())
            return;
        try {
            unsigned long long cloned = 0, copied = 0, n = 0;
            for (const auto & [nevra, r] : results()) {
                cloned += r.cloned;
                copied += r.copied;
                n += r.ok;
            }
            for (auto it = pushed.rbegin(); it != pushed.rend(); ++it)
                rpmPopMacro(nullptr, it->c_str());
            pushed.clear();
            bool keepcache = get_base().get_config().get_keepcache_option().get_value();
            std::vector<std::string> argv = step("finish");
            argv.insert(argv.end(), {"--keep", keep, "--keepcache", keepcache ? "1" : "0",
                                     "--cow", std::to_string(n), "--cloned", std::to_string(cloned),
                                     "--copied", std::to_string(copied),
                                     "--total", std::to_string(packages.size())});
            if (!private_dir.empty())
                argv.insert(argv.end(), {"--private", private_dir});
            argv.push_back("--");
            argv.insert(argv.end(), packages.begin(), packages.end());
            std::string out;
            run_step(argv, out);
        } catch (...) {
        }
        active = false;
        private_dir.clear();
        rpm_plugin.clear();
        packages.clear();
    }

    std::string python, path, denylist, workers, keep, share_tails;
    std::string rpm_plugin;              // the cow.so rpm was told to load
    std::vector<std::string> packages;   // inbound packages' cache paths
    std::vector<std::string> sized;      // the same as PATH:DOWNLOAD_SIZE
    pid_t follower = -1;                 // the follow step, while downloads run
    int follower_in = -1;
    std::vector<std::string> pushed;     // macros to pop, in order
    std::string private_dir;
    bool active = false;
};

}  // namespace

extern "C" {

libdnf5::PluginAPIVersion libdnf_plugin_get_api_version(void) {
    return API;
}

const char * libdnf_plugin_get_name(void) {
    return NAME;
}

libdnf5::plugin::Version libdnf_plugin_get_version(void) {
    return VERSION;
}

libdnf5::plugin::IPlugin * libdnf_plugin_new_instance(
    libdnf5::LibraryVersion, libdnf5::plugin::IPluginData & data, libdnf5::ConfigParser & parser) try {
    return new Cow(data, parser);
} catch (...) {
    last_exception = std::current_exception();
    return nullptr;
}

void libdnf_plugin_delete_instance(libdnf5::plugin::IPlugin * plugin) {
    delete plugin;
}

std::exception_ptr * libdnf_plugin_get_last_exception(void) {
    return &last_exception;
}

}  // extern "C"
