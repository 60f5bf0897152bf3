package aws

import (
	"context"
	"fmt"
	"sort"

	sdkaws "github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/greengrassv2"
	ggtypes "github.com/aws/aws-sdk-go-v2/service/greengrassv2/types"

	"github.com/ggfleet/ggfleet/broker/errkind"
	"github.com/ggfleet/ggfleet/broker/provider"
	"github.com/ggfleet/ggfleet/shared/cdf"
)

// batchSize is Greengrass's limit of entries per client-device batch call.
const batchSize = 100

// GetCoreDevice returns the core's Greengrass registration, or
// errkind.NotFound when the nucleus has never connected.
func (p *Provider) GetCoreDevice(ctx context.Context, name string) (provider.CoreDevice, error) {
	if err := provider.CheckName("core name", name); err != nil {
		return provider.CoreDevice{}, err
	}
	out, err := p.gg.GetCoreDevice(ctx, &greengrassv2.GetCoreDeviceInput{CoreDeviceThingName: &name})
	if err != nil {
		return provider.CoreDevice{}, mapErr(err, "get core device %q", name)
	}
	return provider.CoreDevice{
		Name:         name,
		Status:       string(out.Status),
		CoreVersion:  sdkaws.ToString(out.CoreVersion),
		Platform:     sdkaws.ToString(out.Platform),
		Architecture: sdkaws.ToString(out.Architecture),
		LastStatus:   sdkaws.ToTime(out.LastStatusUpdateTimestamp),
		Tags:         out.Tags,
	}, nil
}

// DeleteCoreDevice removes the Greengrass registration (not the thing);
// missing is not an error.
func (p *Provider) DeleteCoreDevice(ctx context.Context, name string) error {
	if err := provider.CheckName("core name", name); err != nil {
		return err
	}
	_, err := p.gg.DeleteCoreDevice(ctx, &greengrassv2.DeleteCoreDeviceInput{CoreDeviceThingName: &name})
	if err != nil && !hasCode(err, notFoundCodes...) {
		return mapErr(err, "delete core device %q", name)
	}
	return nil
}

// notRegistered is the error for a core Greengrass does not know.
func notRegistered(core string, err error) error {
	return errkind.Wrap(errkind.Invalid, err, "core %q is not registered with AWS IoT Greengrass: its nucleus must connect once before client devices can be associated with it", core)
}

// AssociateClientDevices associates things with a registered core, in
// batches of 100. Devices AWS rejects are returned in the failure map with
// AWS's code and message.
func (p *Provider) AssociateClientDevices(ctx context.Context, core string, devices []string) (map[string]string, error) {
	return p.batchClientDevices(ctx, core, devices, true)
}

// DisassociateClientDevices removes associations; same contract.
func (p *Provider) DisassociateClientDevices(ctx context.Context, core string, devices []string) (map[string]string, error) {
	return p.batchClientDevices(ctx, core, devices, false)
}

func (p *Provider) batchClientDevices(ctx context.Context, core string, devices []string, associate bool) (map[string]string, error) {
	verb := "associate"
	if !associate {
		verb = "disassociate"
	}
	if err := provider.CheckName("core name", core); err != nil {
		return nil, err
	}
	failed := map[string]string{}
	var valid []string
	for _, d := range devices {
		if err := provider.CheckName("device name", d); err != nil {
			failed[d] = errkind.Message(err)
			continue
		}
		valid = append(valid, d)
	}
	if len(valid) == 0 {
		// Still report an unregistered core, as a non-empty call would.
		if _, err := p.GetCoreDevice(ctx, core); err != nil {
			if errkind.Is(err, errkind.NotFound) {
				return nil, notRegistered(core, err)
			}
			return nil, err
		}
		return failed, nil
	}
	for start := 0; start < len(valid); start += batchSize {
		chunk := valid[start:min(start+batchSize, len(valid))]
		var errs []struct{ name, code, msg string }
		var err error
		if associate {
			entries := make([]ggtypes.AssociateClientDeviceWithCoreDeviceEntry, len(chunk))
			for i := range chunk {
				entries[i].ThingName = &chunk[i]
			}
			var out *greengrassv2.BatchAssociateClientDeviceWithCoreDeviceOutput
			out, err = p.gg.BatchAssociateClientDeviceWithCoreDevice(ctx, &greengrassv2.BatchAssociateClientDeviceWithCoreDeviceInput{CoreDeviceThingName: &core, Entries: entries})
			if err == nil {
				for _, e := range out.ErrorEntries {
					errs = append(errs, struct{ name, code, msg string }{sdkaws.ToString(e.ThingName), sdkaws.ToString(e.Code), sdkaws.ToString(e.Message)})
				}
			}
		} else {
			entries := make([]ggtypes.DisassociateClientDeviceFromCoreDeviceEntry, len(chunk))
			for i := range chunk {
				entries[i].ThingName = &chunk[i]
			}
			var out *greengrassv2.BatchDisassociateClientDeviceFromCoreDeviceOutput
			out, err = p.gg.BatchDisassociateClientDeviceFromCoreDevice(ctx, &greengrassv2.BatchDisassociateClientDeviceFromCoreDeviceInput{CoreDeviceThingName: &core, Entries: entries})
			if err == nil {
				for _, e := range out.ErrorEntries {
					errs = append(errs, struct{ name, code, msg string }{sdkaws.ToString(e.ThingName), sdkaws.ToString(e.Code), sdkaws.ToString(e.Message)})
				}
			}
		}
		if hasCode(err, notFoundCodes...) {
			return nil, notRegistered(core, err)
		}
		if err != nil {
			return failed, mapErr(err, "%s client devices with core %q", verb, core)
		}
		for _, e := range errs {
			failed[e.name] = fmt.Sprintf("AWS %s: %s", e.code, e.msg)
		}
	}
	return failed, nil
}

// ListClientDevices lists the devices associated with a core, sorted by
// name; a core Greengrass does not know has none.
func (p *Provider) ListClientDevices(ctx context.Context, core string) ([]provider.Association, error) {
	if err := provider.CheckName("core name", core); err != nil {
		return nil, err
	}
	var list []provider.Association
	pg := greengrassv2.NewListClientDevicesAssociatedWithCoreDevicePaginator(p.gg, &greengrassv2.ListClientDevicesAssociatedWithCoreDeviceInput{CoreDeviceThingName: &core})
	for pg.HasMorePages() {
		out, err := pg.NextPage(ctx)
		if hasCode(err, notFoundCodes...) {
			return nil, nil
		}
		if err != nil {
			return nil, mapErr(err, "list client devices of core %q", core)
		}
		for _, a := range out.AssociatedClientDevices {
			list = append(list, provider.Association{ThingName: sdkaws.ToString(a.ThingName), AssociatedAt: sdkaws.ToTime(a.AssociationTimestamp)})
		}
	}
	sort.Slice(list, func(i, j int) bool { return list[i].ThingName < list[j].ThingName })
	return list, nil
}

// listPageSize is the largest page the Greengrass list operations return.
const listPageSize = 100

// ListInstalledComponents returns the components Greengrass reports the
// core runs (root components, Greengrass's default view), in the order
// Greengrass lists them; errkind.NotFound when the core is not registered.
func (p *Provider) ListInstalledComponents(ctx context.Context, core string) ([]cdf.InstalledComponent, error) {
	if err := provider.CheckName("core name", core); err != nil {
		return nil, err
	}
	out := []cdf.InstalledComponent{}
	pg := greengrassv2.NewListInstalledComponentsPaginator(p.gg, &greengrassv2.ListInstalledComponentsInput{CoreDeviceThingName: &core},
		func(o *greengrassv2.ListInstalledComponentsPaginatorOptions) { o.Limit = listPageSize })
	for pg.HasMorePages() {
		page, err := pg.NextPage(ctx)
		if err != nil {
			return nil, mapErr(err, "list installed components of core %q", core)
		}
		for _, c := range page.InstalledComponents {
			out = append(out, cdf.InstalledComponent{Name: sdkaws.ToString(c.ComponentName), Version: sdkaws.ToString(c.ComponentVersion)})
		}
	}
	return out, nil
}

// ListEffectiveDeployments returns the deployments Greengrass has sent to
// the core, with their execution status on it (spec §7 field names);
// errkind.NotFound when the core is not registered.
func (p *Provider) ListEffectiveDeployments(ctx context.Context, core string) ([]cdf.EffectiveDeployment, error) {
	if err := provider.CheckName("core name", core); err != nil {
		return nil, err
	}
	out := []cdf.EffectiveDeployment{}
	pg := greengrassv2.NewListEffectiveDeploymentsPaginator(p.gg, &greengrassv2.ListEffectiveDeploymentsInput{CoreDeviceThingName: &core},
		func(o *greengrassv2.ListEffectiveDeploymentsPaginatorOptions) { o.Limit = listPageSize })
	for pg.HasMorePages() {
		page, err := pg.NextPage(ctx)
		if err != nil {
			return nil, mapErr(err, "list effective deployments of core %q", core)
		}
		for _, d := range page.EffectiveDeployments {
			out = append(out, cdf.EffectiveDeployment{
				DeploymentID:              sdkaws.ToString(d.DeploymentId),
				DeploymentName:            sdkaws.ToString(d.DeploymentName),
				IotJobID:                  sdkaws.ToString(d.IotJobId),
				IotJobArn:                 sdkaws.ToString(d.IotJobArn),
				Description:               sdkaws.ToString(d.Description),
				TargetArn:                 sdkaws.ToString(d.TargetArn),
				CoreDeviceExecutionStatus: string(d.CoreDeviceExecutionStatus),
				Reason:                    sdkaws.ToString(d.Reason),
				CreatedAt:                 cdf.TimePtr(sdkaws.ToTime(d.CreationTimestamp)),
				UpdatedAt:                 cdf.TimePtr(sdkaws.ToTime(d.ModifiedTimestamp)),
			})
		}
	}
	return out, nil
}
