// Command pulumi-language-python is a Python language host for the Pulumi
// engine, built from the pinned Pulumi SDK.
//
// Upstream's host lives in a Go module that the module proxy here does not
// serve, so this project builds its own: it implements what `pulumi preview`
// and `pulumi up` ask of a language host (plugin info, required packages, run)
// and runs programs through upstream's own `pulumi-language-python-exec`
// script and the SDK's Python toolchain resolution (virtualenv from
// Pulumi.yaml). Anything else answers Unimplemented, which the engine handles.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/pulumi/pulumi/sdk/v3/go/common/util/rpcutil"
	pulumirpc "github.com/pulumi/pulumi/sdk/v3/proto/go"
	"github.com/pulumi/pulumi/sdk/v3/python/toolchain"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/emptypb"
)

// Set at build time to the Pulumi release the host was built from.
var version = "dev"

// The exec script exits with this code after printing an error the user can act
// on; the engine then shows no extra "program failed" message.
const userActionableExitCode = 32

const execScriptName = "pulumi-language-python-exec"

// How often the host checks that the engine that started it is still there.
const engineCheckInterval = 5 * time.Second

type host struct {
	pulumirpc.UnimplementedLanguageRuntimeServer
	engineAddress string
	execScript    string
}

func main() {
	engineAddress, err := engineAddressFrom(os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	script, err := findExecScript()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	h := &host{engineAddress: engineAddress, execScript: script}

	// Stop serving when the engine goes away, or the host outlives it.
	ctx, stop := context.WithCancel(context.Background())
	cancel := make(chan bool)
	go func() {
		<-ctx.Done()
		close(cancel)
	}()
	if err := rpcutil.Healthcheck(ctx, engineAddress, engineCheckInterval, stop); err != nil {
		fmt.Fprintf(os.Stderr, "could not watch the engine: %v\n", err)
		os.Exit(1)
	}

	handle, err := rpcutil.ServeWithOptions(rpcutil.ServeOptions{
		Cancel: cancel,
		Init: func(srv *grpc.Server) error {
			pulumirpc.RegisterLanguageRuntimeServer(srv, h)
			return nil
		},
		Options: rpcutil.OpenTracingServerInterceptorOptions(nil),
	})
	if err != nil {
		fmt.Fprintf(os.Stderr, "could not start the language host: %v\n", err)
		os.Exit(1)
	}
	// The engine reads the port from the first line of stdout.
	fmt.Printf("%d\n", handle.Port)
	if err := <-handle.Done; err != nil {
		fmt.Fprintf(os.Stderr, "language host stopped: %v\n", err)
		os.Exit(1)
	}
}

// engineAddressFrom takes the engine's address, which the engine passes last,
// after optional logging and tracing flags.
func engineAddressFrom(args []string) (string, error) {
	var positional []string
	for i := 0; i < len(args); i++ {
		arg := args[i]
		switch {
		case arg == "--tracing" || arg == "-tracing":
			i++ // its value follows
		case strings.HasPrefix(arg, "-"):
		default:
			positional = append(positional, arg)
		}
	}
	if len(positional) == 0 {
		return "", errors.New("usage: pulumi-language-python [flags] ENGINE_ADDRESS")
	}
	return positional[len(positional)-1], nil
}

func findExecScript() (string, error) {
	if self, err := os.Executable(); err == nil {
		beside := filepath.Join(filepath.Dir(self), execScriptName)
		if _, err := os.Stat(beside); err == nil {
			return beside, nil
		}
	}
	if onPath, err := exec.LookPath(execScriptName); err == nil {
		return onPath, nil
	}
	return "", fmt.Errorf("%s was not found beside the language host or on PATH", execScriptName)
}

func (h *host) GetPluginInfo(context.Context, *emptypb.Empty) (*pulumirpc.PluginInfo, error) {
	return &pulumirpc.PluginInfo{Version: strings.TrimPrefix(version, "v")}, nil
}

// The engine installs nothing here (automatic plugin acquisition is off), and
// loads each provider plugin when the program first registers it.
func (h *host) GetRequiredPlugins(
	context.Context, *pulumirpc.GetRequiredPluginsRequest,
) (*pulumirpc.GetRequiredPluginsResponse, error) {
	return &pulumirpc.GetRequiredPluginsResponse{}, nil
}

func (h *host) GetRequiredPackages(
	context.Context, *pulumirpc.GetRequiredPackagesRequest,
) (*pulumirpc.GetRequiredPackagesResponse, error) {
	return &pulumirpc.GetRequiredPackagesResponse{}, nil
}

func (h *host) Run(ctx context.Context, req *pulumirpc.RunRequest) (*pulumirpc.RunResponse, error) {
	info := req.GetInfo()
	if info == nil {
		return nil, errors.New("the engine sent no program info")
	}
	tc, err := toolchain.ResolveToolchain(pythonOptions(info))
	if err != nil {
		return &pulumirpc.RunResponse{Error: err.Error()}, nil
	}
	program := info.GetEntryPoint()
	if program == "" {
		program = "."
	}
	args := []string{
		h.execScript,
		"--monitor", req.GetMonitorAddress(),
		"--engine", h.engineAddress,
		"--project", req.GetProject(),
		"--stack", req.GetStack(),
		"--pwd", info.GetProgramDirectory(),
		"--root_directory", info.GetRootDirectory(),
		"--parallel", strconv.Itoa(int(req.GetParallel())),
		"--dry_run", strconv.FormatBool(req.GetDryRun()),
	}
	if org := req.GetOrganization(); org != "" {
		args = append(args, "--organization", org)
	}
	args = append(args, program)
	args = append(args, req.GetArgs()...)

	cmd, err := tc.Command(ctx, args...)
	if err != nil {
		return &pulumirpc.RunResponse{Error: err.Error()}, nil
	}
	env, err := programEnvironment(req)
	if err != nil {
		return nil, err
	}
	if cmd.Env == nil {
		// The toolchain sets an environment only when it activates a virtualenv.
		cmd.Env = os.Environ()
	}
	cmd.Env = append(cmd.Env, env...)
	cmd.Dir = info.GetProgramDirectory()
	cmd.Stdout = os.Stdout
	cmd.Stderr = os.Stderr

	var exitErr *exec.ExitError
	switch err := cmd.Run(); {
	case err == nil:
		return &pulumirpc.RunResponse{}, nil
	case errors.As(err, &exitErr) && exitErr.ExitCode() == userActionableExitCode:
		return &pulumirpc.RunResponse{Bail: true}, nil
	case errors.As(err, &exitErr):
		return &pulumirpc.RunResponse{
			Error: fmt.Sprintf("Program exited with non-zero exit code: %d", exitErr.ExitCode()),
		}, nil
	default:
		return &pulumirpc.RunResponse{Error: fmt.Sprintf("could not run the program: %v", err)}, nil
	}
}

// pythonOptions reads the `runtime.options` of Pulumi.yaml that choose the
// Python environment: `virtualenv` (relative to the project root) and `toolchain`.
func pythonOptions(info *pulumirpc.ProgramInfo) toolchain.PythonOptions {
	opts := toolchain.PythonOptions{
		Root:       info.GetRootDirectory(),
		ProgramDir: info.GetProgramDirectory(),
		Toolchain:  toolchain.Pip,
	}
	fields := info.GetOptions().GetFields()
	if venv := fields["virtualenv"].GetStringValue(); venv != "" {
		opts.Virtualenv = venv
	}
	return opts
}

// programEnvironment passes config to the program the way the Python SDK reads
// it: all values as one JSON object, the secret keys as a JSON list.
func programEnvironment(req *pulumirpc.RunRequest) ([]string, error) {
	values := req.GetConfig()
	if values == nil {
		// The SDK wants an object even for a stack with no config.
		values = map[string]string{}
	}
	config, err := json.Marshal(values)
	if err != nil {
		return nil, err
	}
	secretKeys := req.GetConfigSecretKeys()
	if secretKeys == nil {
		secretKeys = []string{}
	}
	secrets, err := json.Marshal(secretKeys)
	if err != nil {
		return nil, err
	}
	return []string{
		"PULUMI_CONFIG=" + string(config),
		"PULUMI_CONFIG_SECRET_KEYS=" + string(secrets),
	}, nil
}

// About answers `pulumi about` with the Python that programs run on.
func (h *host) About(ctx context.Context, req *pulumirpc.AboutRequest) (*pulumirpc.AboutResponse, error) {
	info := req.GetInfo()
	if info == nil {
		return &pulumirpc.AboutResponse{}, nil
	}
	tc, err := toolchain.ResolveToolchain(pythonOptions(info))
	if err != nil {
		return nil, err
	}
	about, err := tc.About(ctx)
	if err != nil {
		return nil, err
	}
	return &pulumirpc.AboutResponse{
		Executable: about.PythonExecutable,
		Version:    about.PythonVersion.String(),
		Metadata:   map[string]string{"toolchain": "pip"},
	}, nil
}
